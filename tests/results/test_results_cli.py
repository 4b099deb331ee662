from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from psft_orchestrator.cli.results import main
from psft_orchestrator.results.ingest import reindex


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM nodes",
        "INSERT INTO runs (run_id) VALUES ('x')",
        "DROP TABLE nodes",
        "COPY nodes TO '/tmp/psft-leak.csv'",
        "ATTACH '/tmp/psft-other.duckdb'",
        "SELECT 1; DELETE FROM nodes",
        "CREATE TABLE t AS SELECT 1",
        "UPDATE nodes SET method = 'x'",
    ],
)
def test_query_refuses_writes(workspace: Path, capsys, sql: str) -> None:
    reindex(workspace)
    rc, out, err = _run(capsys, "--workspace", str(workspace), "query", sql)
    assert rc == 2 and err.startswith("error:") and "Traceback" not in err
    rc, out, _ = _run(
        capsys,
        "--workspace",
        str(workspace),
        "query",
        "SELECT count(*) AS n FROM nodes",
        "--format",
        "json",
    )
    assert rc == 0 and json.loads(out) == [{"n": 9}]


def test_query_cannot_read_files(workspace: Path, capsys) -> None:
    reindex(workspace)
    rc, _, err = _run(
        capsys, "--workspace", str(workspace), "query", "SELECT * FROM read_csv('/etc/hostname')"
    )
    assert rc == 2 and "disabled" in err


def test_browse_commands(workspace: Path, capsys) -> None:
    reindex(workspace)
    ws = str(workspace)
    rc, out, _ = _run(capsys, "--workspace", ws, "runs")
    assert rc == 0 and "demo-00000000" in out
    rc, out, _ = _run(capsys, "--workspace", ws, "nodes", "latest", "--format", "csv")
    assert rc == 0 and out.count("\n") == 1 + 10 and "failed" in out
    rc, out, _ = _run(
        capsys,
        "--workspace",
        ws,
        "metrics",
        "train[method=PSFT,model=toy,seed=1]",
        "--keys",
        "entropy,loss",
    )
    assert (
        rc == 0
        and out.splitlines()[0].split() == ["step", "entropy", "loss"]
        and len(out.splitlines()) == 2 + 20
    )
    rc, out, _ = _run(capsys, "--workspace", ws, "lineage", "eval[method=SFT,model=toy,seed=2]")
    assert rc == 0 and "this node" in out and "train[method=SFT,model=toy,seed=2]" in out
    rc, _, err = _run(capsys, "--workspace", ws, "metrics", "zzz")
    assert rc == 2 and "no node matches" in err
    rc, _, err = _run(capsys, "--workspace", ws, "table", "no_such_table")
    assert rc == 2 and "no table named" in err
    rc, _, err = _run(capsys, "--workspace", ws, "table", "table1")
    assert rc == 1 and "no rows" in err


def test_missing_index_exit_1(tmp_path: Path, capsys) -> None:
    rc, _, err = _run(capsys, "--workspace", str(tmp_path), "runs")
    assert rc == 1 and "reindex" in err


def test_help_is_light() -> None:
    """--help imports none of the heavy libraries (its latency: benchmarks/cli_latency.py)."""
    code = (
        "import sys; from psft_orchestrator.cli import results; results.build_parser().format_help(); "
        "print(any(m in sys.modules for m in ('duckdb', 'matplotlib', 'pandas', 'pyarrow', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    help_run = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.results", "--help"], capture_output=True
    )
    assert help_run.returncode == 0


def test_export_lineage_inputs_and_one_line_errors(workspace: Path, capsys, tmp_path: Path) -> None:
    ws = str(workspace)
    train_id = "train[method=SFT,model=toy,seed=2]"
    for path in workspace.glob("artifacts/*/*/manifest.json"):
        manifest = json.loads(path.read_text())
        if manifest["node_id"] == train_id:
            manifest["inputs"] = {
                "model": {"type": "model", "path": "/models/toy", "name": "toy"},
                "data": {"type": "dataset", "path": "/data/math.jsonl", "name": "math"},
            }
            path.write_text(json.dumps(manifest))
            (path.parent / "outputs" / "model").mkdir(parents=True)
            (path.parent / "outputs" / "model" / "config.json").write_text('{"model_type": "x"}')
    for path in workspace.glob("runs/*.json"):
        record = json.loads(path.read_text())
        for node in record["nodes"]:
            if node.get("error"):
                node["error"] = "ValueError: bad row\nTraceback (most recent call last):\n  more"
        path.write_text(json.dumps(record))
    reindex(workspace)

    rc, out, _ = _run(capsys, "--workspace", ws, "lineage", "eval[method=SFT,model=toy,seed=2]")
    assert rc == 0 and "input model: toy (model) /models/toy" in out
    assert "input data: math (dataset) /data/math.jsonl" in out
    rc, out, _ = _run(capsys, "--workspace", ws, "nodes", "latest")
    assert rc == 0 and "ValueError: bad row" in out and "Traceback" not in out

    dest = tmp_path / "exported"
    rc, out, _ = _run(capsys, "--workspace", ws, "export", train_id, str(dest))
    assert rc == 0 and "AutoModelForCausalLM.from_pretrained" in out and str(dest) in out
    assert json.loads((dest / "config.json").read_text()) == {"model_type": "x"}
    rc, _, err = _run(capsys, "--workspace", ws, "export", train_id, str(dest))
    assert rc == 2 and "exists" in err
    rc, _, err = _run(
        capsys,
        "--workspace",
        ws,
        "export",
        "eval[method=SFT,model=toy,seed=2]",
        str(tmp_path / "e"),
    )
    assert rc == 2 and "not a model" in err and not (tmp_path / "e").exists()
