"""Scores carry their protocol into the index; a table cell that averages scores of different
protocols says so, and `--protocol` lists each column's protocols."""

from __future__ import annotations

from pathlib import Path

from synthetic_nodes import write_node

from psft_orchestrator.cli.results import main
from psft_orchestrator.results.ingest import reindex

TABLE = """title: judged
rows: [method]
columns:
  - {header: WR, benchmark: [AlpacaEval2], metric: win_rate}
filter: {kind: eval}
"""


def _proto(backend: str, judge_kind: str) -> dict:
    return {
        "suite": "judge",
        "backend": backend,
        "k": 1,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 0},
        "protocol": "alpaca_eval",
        "judge": {"kind": judge_kind, "model": "toy-judge"},
        "versions": {"psft_orchestrator": "0.1.0", "alpaca_eval": "0.6.6"},
    }


def _workspace(tmp_path: Path, protocols: list[dict]) -> Path:
    ws = tmp_path / "ws"
    for seed, proto in enumerate(protocols, start=1):
        score = {"suite": "alignment", "benchmark": "AlpacaEval2", "metric": "win_rate"}
        write_node(
            ws,
            stage="eval",
            kind="eval",
            labels={"method": "SFT", "seed": seed},
            scores=[{**score, "value": 40.0 + seed, "protocol": proto}],
        )
    (ws / "tables").mkdir()
    (ws / "tables" / "judged.yaml").write_text(TABLE)
    reindex(ws)
    return ws


def _table(ws: Path, capsys, *extra: str) -> str:
    args = ["--workspace", str(ws), "table", "judged", "--tables-dir", str(ws / "tables")]
    assert main([*args, *extra]) == 0
    return capsys.readouterr().out


def test_one_protocol_no_footnote_and_protocol_listing(tmp_path, capsys):
    ws = _workspace(tmp_path, [_proto("vllm", "vllm-serve")] * 2)
    out = _table(ws, capsys)
    assert "different protocols" not in out and "41.50" in out
    listed = _table(ws, capsys, "--protocol")
    assert "protocol of WR:" in listed
    assert "backend=vllm" in listed and "judge.kind=vllm-serve" in listed
    assert "versions.alpaca_eval=0.6.6" in listed


def test_mixed_protocols_are_never_silent(tmp_path, capsys):
    ws = _workspace(tmp_path, [_proto("vllm", "vllm-serve"), _proto("native", "rules")])
    out = _table(ws, capsys)
    assert "averages scores of different protocols" in out
    assert "backend: native vs vllm" in out and "judge.kind: rules vs vllm-serve" in out


def test_a_score_without_protocol_beside_one_with_is_flagged(tmp_path, capsys):
    ws = _workspace(tmp_path, [_proto("vllm", "api"), None])
    assert "different protocols" in _table(ws, capsys)
