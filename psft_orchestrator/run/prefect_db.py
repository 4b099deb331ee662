"""A migrated, empty Prefect database to start each new workspace from.

Each workspace has its own Prefect home (`<workspace>/.prefect`). In a new one, Prefect's
temporary server creates the SQLite database and runs every migration before the first flow
run can start: 21.5 s against 8.0 s with an existing database, measured on this 2-core machine
at load 13. So the first new workspace's database, saved right after its server started and
before any flow run was recorded in it, is kept per Prefect version, and copied into every later
new workspace. The copy is a plain file copy; the save uses SQLite's backup API, which is
consistent while the server has the database open.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from importlib.metadata import version
from pathlib import Path

from psft_orchestrator.envs import cache_dir

DB_NAME = "prefect.db"
MEMO_NAME = "memo_store.toml"  # block types already registered: skipped at the next start


def template_dir() -> Path:
    return cache_dir() / "prefect-db" / version("prefect")


def default_database(home: Path) -> bool:
    """Whether Prefect will use `<home>/prefect.db` (no other database configured)."""
    return "PREFECT_API_DATABASE_CONNECTION_URL" not in os.environ and (
        Path(os.environ.get("PREFECT_HOME", "")) == home
    )


def exists(home: Path) -> bool:
    return (home / DB_NAME).exists()


def seed(home: Path) -> bool:
    """Copy the template database into `home` if it has none yet; True if it did."""
    source = template_dir()
    if (home / DB_NAME).exists() or not (source / DB_NAME).exists():
        return False
    for name in (MEMO_NAME, DB_NAME):  # the database last: its presence means "seeded"
        if (source / name).exists():
            tmp = home / f".{name}.tmp-{os.getpid()}"
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, home / name)
    return True


def save_template(home: Path) -> None:
    """Keep `home`'s database (migrated, no flow run yet) as the template, once per version."""
    target = template_dir()
    if (target / DB_NAME).exists() or not (home / DB_NAME).exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{DB_NAME}.tmp-{os.getpid()}"
    src, dst = sqlite3.connect(home / DB_NAME), sqlite3.connect(tmp)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    if (home / MEMO_NAME).exists():
        shutil.copyfile(home / MEMO_NAME, target / MEMO_NAME)
    os.replace(tmp, target / DB_NAME)
