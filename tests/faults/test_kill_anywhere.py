"""Fault injection on real runs: `kill -9` of the run's process group at every phase, and at
random moments, then a rerun; the end state must be that of one uninterrupted run.

Phases are hit deterministically through the run layer's kill points (`PSFT_KILL_AT`, see
psft_orchestrator/run/faults.py) plus a kill mid-training from outside; those runs join one
Ray cluster (`--ray-address`), so a kill takes the run and its Ray tasks. Random kills take the
whole run with the Ray cluster it started itself, and are repeatable: PSFT_FAULT_KILLS (default 2) kills with PSFT_FAULT_SEED (default 0). A longer soak:

    PSFT_FAULT_KILLS=40 PSFT_FAULT_SEED=7 .venv/bin/python -m pytest -s tests/faults -k random

After every kill: finished nodes are untouched (same `_SUCCESS` mtime). After the final rerun:
the same nodes, bit-identical models, identical scores and metrics (timing keys aside), every
step logged once, and an index equal to the one `psft-results reindex` builds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .workspace import end_state, index_matches_reindex, node_dirs, success_mtimes

pytestmark = pytest.mark.slow
SPEC = Path(__file__).parent / "pipeline.yaml"
TRAIN_STEPS = 12
# (phase, node), one killed run each, in this order; "mid-training" is a kill from outside.
# A node meets one phase after `moved` only once (then it is done), so train takes `moved`
# (its checkpoints left behind, not indexed) and eval `indexed` (committed, index not closed).
PHASES = [
    ("start", ""),
    ("mid-training", "train"),
    ("trained", "train"),  # the trainer is done; the rerun resumes with zero steps left
    ("finalize", "train"),
    ("moved", "train"),
    ("indexed", "eval"),
    ("end", ""),  # every node done; the run record is written, not indexed
]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", **extra)
    for var in ("PSFT_FAKE_BACKEND", "PSFT_KILL_AT", "PREFECT_API_URL"):
        if var not in extra:
            e.pop(var, None)
    return e


def start(ws: Path, ray: str | None = None, **extra: str) -> subprocess.Popen:
    """psft-run in its own process group; with `ray`, joining that cluster instead of starting
    one (then the kill takes the run and its Ray tasks, not the cluster)."""
    cmd = [sys.executable, "-m", "psft_orchestrator.cli.run", str(SPEC), "--workspace", str(ws)]
    cmd += ["--ray-address", ray] if ray else []
    return subprocess.Popen(
        [*cmd, "--no-prefect", "--quiet"],
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as `kill -9 -PGID` from a shell
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)  # also reaps it: no zombie pid left behind
    return proc.returncode, out


RAY_SLOW_START = "timed out during startup"  # Ray's fixed 30 s, missed on an overloaded machine


def run_to_end(ws: Path, ray: str | None = None, **extra: str) -> tuple[int, str]:
    """A run (killed or not) that got past starting Ray; retried twice if Ray could not start."""
    for _ in range(3):
        rc, out = finish(start(ws, ray, **extra))
        if not (rc == 1 and RAY_SLOW_START in out):
            break
        print(f"note: Ray did not start in time (machine overloaded); run again ({extra})")
    return rc, out


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have finished already
        os.killpg(proc.pid, signal.SIGKILL)


def training_lines(ws: Path) -> int:
    rows = list(ws.glob("artifacts/.tmp/train-*/metrics.jsonl"))
    return sum(1 for _ in rows[0].open()) if rows else 0


def kill_mid_training(ws: Path, ray: str | None, at_line: int) -> tuple[int, str]:
    for _ in range(3):
        proc = start(ws, ray)
        deadline = time.time() + 600
        while proc.poll() is None and training_lines(ws) < at_line and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            kill_group(proc)
        rc, out = finish(proc)
        if not (rc == 1 and RAY_SLOW_START in out):
            break
    return rc, out


def killed_run(ws: Path, ray: str | None, phase: str, node: str) -> tuple[int, str]:
    """One run killed at `phase`; checks that it died there and touched no finished node."""
    before = success_mtimes(ws)
    if phase == "mid-training":
        rc, out = kill_mid_training(ws, ray, at_line=TRAIN_STEPS // 2)
    else:
        rc, out = run_to_end(ws, ray, PSFT_KILL_AT=f"{phase}@{node}")
    assert rc == -signal.SIGKILL, f"the run was not killed at {phase}: exit {rc}\n{out[-3000:]}"
    after = success_mtimes(ws)
    touched = {k for k, v in before.items() if after.get(k) != v}
    assert not touched, f"kill at {phase}: finished nodes changed: {touched}"
    print(f"kill at {phase:13} -> finished nodes now: {sorted(node_dirs(ws))}")
    return rc, out


def final_run_matches(ws: Path, reference: dict, ray: str | None = None) -> None:
    before = success_mtimes(ws)
    rc, out = run_to_end(ws, ray)
    assert rc == 0, out[-3000:]
    assert all(success_mtimes(ws)[k] == v for k, v in before.items()), "a finished node was redone"
    state = end_state(ws)
    assert sorted(state) == sorted(reference), (sorted(state), sorted(reference))
    for name, expected in reference.items():
        got = state[name]
        assert got["model"] == expected["model"], f"{name}: model weights differ"
        assert got["scores"] == expected["scores"], f"{name}: scores differ"
        steps = [r["step"] for r in got["metrics"]]
        assert len(steps) == len(set(steps)), f"{name}: a step was logged twice: {steps}"
        assert got["metrics"] == expected["metrics"], f"{name}: metrics differ\n{got['metrics']}"
    train = next(d for n, d in node_dirs(ws).items() if n.startswith("train/"))
    summary = json.loads((train / "summary.json").read_text())
    assert summary["final_loss"] is not None, summary
    assert not list(ws.glob("checkpoints/*/*")), "checkpoints of finished nodes were left behind"
    assert index_matches_reindex(ws) == [], "the index differs from a reindex"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A Ray cluster that the phase test's runs join: one start-up instead of one per run.
    PSFT_FAULT_RAY_ADDRESS=HOST:PORT joins a cluster you started (an overloaded machine can
    miss Ray's fixed 30 s start-up time)."""
    if os.environ.get("PSFT_FAULT_RAY_ADDRESS"):
        yield os.environ["PSFT_FAULT_RAY_ADDRESS"]
        return
    code = (
        "import ray, sys, time\n"
        "info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)\n"
        "print(info.address_info['gcs_address'], flush=True)\n"
        "time.sleep(3600)\n"
    )
    for _ in range(3):  # Ray gives itself a fixed 30 s to start; an overloaded machine misses it
        head = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        address = head.stdout.readline().strip()
        if address:
            break
        finish(head)
    assert address, "could not start a Ray cluster"
    yield address
    kill_group(head)
    finish(head)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_cluster) -> tuple[dict, float]:
    """One uninterrupted run: its end state, and how long it took."""
    ws = tmp_path_factory.mktemp("reference") / "ws"
    t0 = time.time()
    rc, out = run_to_end(ws, ray_cluster)
    assert rc == 0, out[-3000:]
    state = end_state(ws)
    train = next(v for k, v in state.items() if k.startswith("train/"))
    assert [r["step"] for r in train["metrics"]] == list(range(1, TRAIN_STEPS + 1))
    return state, time.time() - t0


def test_kill_at_every_phase_then_resume_matches_uninterrupted(
    tmp_path: Path, reference, ray_cluster
):
    ws = tmp_path / "ws"
    for phase, node in PHASES:
        killed_run(ws, ray_cluster, phase, node)
    final_run_matches(ws, reference[0], ray_cluster)


def test_kill_at_random_moments(tmp_path: Path, reference):
    state, duration = reference
    kills = int(os.environ.get("PSFT_FAULT_KILLS", "2"))
    rng = random.Random(int(os.environ.get("PSFT_FAULT_SEED", "0")))
    landed = 0
    for i in range(kills):
        ws = tmp_path / f"ws{i}"
        # The reference joined a running cluster; these runs start their own Ray: give it time.
        delay = rng.uniform(0.0, 1.5 * duration)
        proc = start(ws)  # its own Ray: the kill takes the whole run, Ray included
        time.sleep(delay)
        if proc.poll() is None:
            kill_group(proc)
        rc, _ = finish(proc)
        landed += rc == -signal.SIGKILL
        print(f"random kill {i}: after {delay:.1f}s of ~{duration:.1f}s, exit {rc}")
        final_run_matches(ws, state)
    print(f"{landed} of {kills} random kills landed before the run finished")
