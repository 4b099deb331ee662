"""A new workspace's Prefect database is copied from a template saved once, not re-migrated."""

from __future__ import annotations

import sqlite3

from psft_orchestrator.run import prefect_db


def _db(path, rows) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE alembic_version (version_num TEXT)")
    con.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in rows])
    con.commit()
    con.close()


def test_template_saved_once_then_seeds_new_homes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PSFT_CACHE_DIR", str(tmp_path / "cache"))
    first, second, third = (tmp_path / n for n in ("ws1", "ws2", "ws3"))
    for home in (first, second, third):
        home.mkdir()
    assert not prefect_db.seed(first)  # no template yet: Prefect migrates a new database
    _db(first / prefect_db.DB_NAME, ["head"])
    (first / prefect_db.MEMO_NAME).write_text("memo")
    prefect_db.save_template(first)

    _db(second / prefect_db.DB_NAME, ["other"])  # a home with a database keeps its own
    prefect_db.save_template(second)  # and never replaces the saved template
    assert not prefect_db.seed(second)

    assert prefect_db.seed(third)
    con = sqlite3.connect(third / prefect_db.DB_NAME)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("head",)]
    con.close()
    assert (third / prefect_db.MEMO_NAME).read_text() == "memo"
    assert not list(third.glob(".*tmp*")) and not list(prefect_db.template_dir().glob(".*tmp*"))


def test_only_the_default_database_is_seeded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert prefect_db.default_database(tmp_path)
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    assert not prefect_db.default_database(tmp_path)
