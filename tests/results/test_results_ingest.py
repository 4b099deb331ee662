from __future__ import annotations

import shutil
from pathlib import Path

from synthetic_nodes import write_node

from psft_orchestrator.results import store
from psft_orchestrator.results.ingest import find_node_dirs, ingest_node, ingest_run_record, reindex
from psft_orchestrator.results.render import render
from psft_orchestrator.results.tables import compute_table, get_definition, tables_dirs


def _dump(ws: Path) -> dict[str, list]:
    with store.reader(ws) as con:
        out = {}
        for t in store.ALL_TABLES:
            out[t] = con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
        return out


def _ingest_all(ws: Path) -> None:
    with store.writer(ws) as con:
        for d in find_node_dirs(ws):
            ingest_node(con, d)
        for rec in sorted((ws / "runs").glob("*.json")):
            ingest_run_record(con, rec)


def test_ingest_reads_every_file(workspace: Path) -> None:
    _ingest_all(workspace)
    with store.reader(workspace) as con:
        n = dict(con.execute("SELECT kind, count(*) FROM nodes GROUP BY kind").fetchall())
        assert n == {"sft": 2, "psft": 2, "eval": 4, "dpo": 1}
        # 20 steps x (loss, entropy, grad_norm, lr) for 4 nodes, + clipfrac for the 2 PSFT nodes, + DPO 10 x 3
        assert (
            con.execute("SELECT count(*) FROM metrics").fetchall()[0][0]
            == 4 * 20 * 4 + 2 * 20 + 10 * 3
        )
        assert con.execute("SELECT count(*) FROM scores").fetchall()[0][0] == 4 * (3 + 3)
        assert con.execute("SELECT count(*) FROM lineage").fetchall()[0][0] == 4
        assert (
            con.execute("SELECT count(*) FROM run_nodes WHERE status = 'failed'").fetchall()[0][0]
            == 1
        )
        seeds = con.execute(
            "SELECT DISTINCT seed FROM nodes WHERE seed IS NOT NULL ORDER BY 1"
        ).fetchall()
        assert seeds == [(1,), (2,)]


def test_double_ingest_does_not_duplicate(workspace: Path) -> None:
    _ingest_all(workspace)
    first = _dump(workspace)
    _ingest_all(workspace)
    assert _dump(workspace) == first


def test_reingest_replaces_changed_node(workspace: Path) -> None:
    _ingest_all(workspace)
    node = next(d for d in find_node_dirs(workspace) if d.parent.name == "dpo")
    (node / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    with store.writer(workspace) as con:
        fp = ingest_node(con, node)
    with store.reader(workspace) as con:
        assert con.execute(
            "SELECT step, key, value FROM metrics WHERE fingerprint = ?", [fp]
        ).fetchall() == [(1, "loss", 0.5)]


def test_reindex_gives_identical_tables(workspace: Path) -> None:
    _ingest_all(workspace)
    incremental = _dump(workspace)
    (workspace / store.DB_NAME).unlink()
    stats = reindex(workspace)
    assert stats.nodes == 9 and stats.runs == 1
    assert _dump(workspace) == incremental
    tdef = get_definition("toy_all", tables_dirs())
    with store.reader(workspace) as con:
        before = render(compute_table(con, tdef), "csv")
    reindex(workspace)  # over an existing index
    with store.reader(workspace) as con:
        assert render(compute_table(con, tdef), "csv") == before
    assert not list(workspace.glob(".index.duckdb.tmp*"))


def test_non_numeric_and_broken_metrics(tmp_path: Path) -> None:
    _, d = write_node(
        tmp_path,
        stage="train",
        kind="psft",
        labels={"method": "PSFT"},
        metrics=[{"step": 1, "loss": float("nan"), "clipped_tokens": [["wait", 2]], "ok": True}],
    )
    with (d / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "loss": 1.5}\n{"step": 3, "lo')  # a truncated last line
    with store.writer(tmp_path) as con:
        ingest_node(con, d)
        rows = con.execute("SELECT step, key, value FROM metrics ORDER BY step").fetchall()
        assert rows[0][1] == "loss" and rows[0][2] != rows[0][2]  # NaN kept
        assert rows[1:] == [(2, "loss", 1.5)]
        other = dict(con.execute("SELECT key, value FROM metric_values").fetchall())
        assert set(other) == {"clipped_tokens", "ok"}


def test_busy_index_is_a_clear_error(workspace: Path, monkeypatch, capsys) -> None:
    import subprocess
    import sys

    from psft_orchestrator.cli.results import main

    _ingest_all(workspace)
    monkeypatch.setenv("PSFT_INDEX_WAIT_S", "0.3")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(workspace / store.DB_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--workspace", str(workspace), "runs"]) == 1
        err = capsys.readouterr().err
        assert "locked by process" in err and "Retry" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()


def test_missing_index_message(tmp_path: Path) -> None:
    try:
        with store.reader(tmp_path):
            raise AssertionError
    except store.IndexMissingError as e:
        assert "reindex" in str(e)


def test_node_dir_copy_elsewhere_is_ignored_unless_finished(workspace: Path) -> None:
    tmp = workspace / "artifacts" / ".tmp" / "x"
    shutil.copytree(find_node_dirs(workspace)[0], tmp)
    assert all(".tmp" not in str(d) for d in find_node_dirs(workspace))


def test_manifest_missing_a_required_field_is_rejected(tmp_path: Path) -> None:
    import json

    import pytest

    from psft_orchestrator.results.store import ResultsError

    _, good = write_node(tmp_path, stage="train", kind="sft", labels={"method": "SFT"})
    _, bad = write_node(tmp_path, stage="eval", kind="eval", labels={"method": "SFT"})
    manifest = json.loads((bad / "manifest.json").read_text())
    run_id = manifest.pop("run_id")
    manifest["surprise"] = 1
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with store.writer(tmp_path) as con:
        with pytest.raises(ResultsError) as e:
            ingest_node(con, bad)
        msg = str(e.value)
        assert str(bad / "manifest.json") in msg
        assert "missing required field 'run_id'" in msg and "unknown field 'surprise'" in msg
        assert con.execute("SELECT count(*) FROM nodes").fetchall()[0][0] == 0  # nothing written
        ingest_node(con, good)
        assert con.execute("SELECT run_id FROM nodes").fetchall() == [(run_id,)]
