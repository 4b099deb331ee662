"""End to end on the real native backend: the demo spec (reduced), cache hit, results CLI, and
kill -9 during training followed by a resume that matches an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# The demo, shrunk to seconds per node: same DAG (3 seeds of SFT and PSFT), every backend path native.
REDUCE = [
    "pretrain.max_steps=30",
    "pretrain.max_length=128",
    "datasets.corpus.n=600",
    "datasets.math_train.n=128",  # 128 distinct chains (the filter keeps all): more than a PSFT batch (64)
    "datasets.toy_math.n=8",
    "datasets.toy_ood.n=10",
    "datasets.toy_ifeval.n=8",
    "train.max_steps=4",
    "vars.suites=[{type: math, name: math, benchmarks: [toy_math], k: 2, max_new_tokens: 24, batch_size: 16}, "
    "{type: rules, name: ood, benchmarks: [toy_ood], k: 1, temperature: 0, max_new_tokens: 12, system_prompt: null}, "
    "{type: rules, name: ifeval, benchmarks: [toy_ifeval], k: 1, temperature: 0, max_new_tokens: 12}]",
]


def env() -> dict[str, str]:
    e = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
    e.pop("PSFT_FAKE_BACKEND", None)
    return e


def cli(module: str, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
    )


def test_demo_end_to_end_reduced(tmp_path: Path):
    ws = tmp_path / "ws"
    sets = [a for s in REDUCE for a in ("--set", s)]
    run = cli(
        "psft_orchestrator.cli.run",
        str(REPO / "specs" / "demo.yaml"),
        "--workspace",
        str(ws),
        "--no-prefect",
        *sets,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "15 success" in run.stdout
    # The printed table has a row per method, with real (computed) scores.
    for method in ("Original", "SFT", "PSFT"):
        assert f"| {method} |" in run.stdout, run.stdout[-3000:]
    scores = [json.loads(p.read_text()) for p in ws.glob("artifacts/*eval*/*/outputs/scores.json")]
    assert len(scores) == 7 and all(rows for rows in scores)
    # Rerun: everything cached, nothing trained.
    again = cli(
        "psft_orchestrator.cli.run",
        str(REPO / "specs" / "demo.yaml"),
        "--workspace",
        str(ws),
        *sets,
    )
    assert again.returncode == 0 and "15 cached" in again.stdout
    # The results CLI reads the same index.
    table = cli(
        "psft_orchestrator.cli.results",
        "--workspace",
        str(ws),
        "table",
        "toy_all",
        "--format",
        "csv",
    )
    assert table.returncode == 0 and "PSFT" in table.stdout, table.stderr
    q = cli(
        "psft_orchestrator.cli.results",
        "--workspace",
        str(ws),
        "query",
        "select count(*) as n from metrics where key = 'entropy'",
        "--format",
        "json",
    )
    assert q.returncode == 0 and json.loads(q.stdout)[0]["n"] > 0


def test_kill_9_during_training_then_resume_matches_uninterrupted(tmp_path: Path):
    spec = REPO / "tests" / "e2e" / "resume.yaml"
    ref_ws, ws = tmp_path / "ref", tmp_path / "ws"
    ref = cli("psft_orchestrator.cli.run", str(spec), "--workspace", str(ref_ws), "--no-prefect")
    assert ref.returncode == 0, ref.stdout + ref.stderr

    cmd = [
        sys.executable,
        "-m",
        "psft_orchestrator.cli.run",
        str(spec),
        "--workspace",
        str(ws),
        "--no-prefect",
    ]
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline:  # kill early in the run (a checkpoint is saved every step)
        rows = list(ws.glob("artifacts/.tmp/*/metrics.jsonl"))
        if rows and sum(1 for _ in rows[0].open()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(ws.glob("artifacts/train/*/_SUCCESS")), "the node must not have finished"
    assert list(ws.glob("checkpoints/train/*/*")), "a checkpoint must survive the kill"

    again = cli("psft_orchestrator.cli.run", str(spec), "--workspace", str(ws), "--no-prefect")
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads(next(ws.glob("artifacts/train/*/summary.json")).read_text())
    assert summary.get("resumed_from"), summary

    def losses(w: Path) -> list[tuple[int, float]]:
        lines = next(w.glob("artifacts/train/*/metrics.jsonl")).read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines)]

    # Every step is logged once (the killed attempt's rows were carried over and truncated to
    # the checkpoint), and the numbers are those of the uninterrupted run.
    resumed, reference = losses(ws), losses(ref_ws)
    assert [s for s, _ in resumed] == list(range(1, 49))
    assert [v for _, v in resumed] == pytest.approx([v for _, v in reference], rel=1e-6, abs=1e-7)
    ref_summary = json.loads(next(ref_ws.glob("artifacts/train/*/summary.json")).read_text())
    assert summary["final_loss"] == pytest.approx(ref_summary["final_loss"], rel=1e-6, abs=1e-7)
