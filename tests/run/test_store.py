"""The artifact store's crash bookkeeping: stale build directories and metric carry-over."""

from __future__ import annotations

import json
import os
from pathlib import Path

from psft_orchestrator.run import store

FP = "0123456789abcdef"


def attempt(ws: Path, name: str, steps: range, mtime: int) -> Path:
    """A failed attempt of node train/FP whose metrics.jsonl logs `steps`."""
    d = ws / "artifacts" / ".failed" / name
    (d / "logs").mkdir(parents=True)
    (d / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)
    )
    os.utime(d, ns=(mtime, mtime))
    return d


def with_checkpoint(ws: Path) -> None:
    (store.checkpoint_dir(ws, "train", FP) / "step_00000012").mkdir(parents=True)


def test_carry_over_takes_the_attempt_that_got_furthest_not_the_newest(tmp_path: Path):
    ws = tmp_path
    with_checkpoint(ws)
    attempt(ws, f"train-{FP}-20260101T000000-killed", range(1, 13), mtime=1)  # all 12 steps
    attempt(ws, f"train-{FP}-20260101T000100-killed", range(0), mtime=2)  # killed at start-up
    attempt(ws, f"train-{FP}-20260101T000200", range(1, 7), mtime=3)  # an older copy, cut short
    d = store.tmp_dir(ws, "train", FP)
    steps = [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_no_carry_over_without_a_checkpoint(tmp_path: Path):
    attempt(tmp_path, f"train-{FP}-20260101T000000-killed", range(1, 5), mtime=1)
    d = store.tmp_dir(tmp_path, "train", FP)
    assert not (d / "metrics.jsonl").exists()  # starting from step 0: nothing to continue


def test_last_step_skips_a_line_cut_by_a_crash(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert store.last_step(path) == 2
    assert store.last_step(tmp_path / "missing.jsonl") == -1


def test_stale_build_dirs_are_put_aside_even_when_their_pid_looks_alive(tmp_path: Path):
    # pid 1 is alive (as a killed run's unreaped zombie, or a reused pid, would look); under the
    # workspace lock no other run of this workspace exists, so its build directory is stale.
    root = tmp_path / "artifacts" / ".tmp"
    stale = [root / f"train-{FP}-1", root / f"eval-{FP}-999999"]
    ours = root / f"train-{FP}-{os.getpid()}"
    for d in (*stale, ours):
        (d / "logs").mkdir(parents=True)
        (d / "metrics.jsonl").write_text('{"step": 1}\n')
    moved = store.clean_stale_tmp(tmp_path)
    assert len(moved) == 2 and ours.exists() and not any(d.exists() for d in stale)
    assert all((m / "metrics.jsonl").exists() and m.name.endswith("-killed") for m in moved)
    # Twice in the same second: a second name, not a crash on the first.
    (stale[0] / "logs").mkdir(parents=True)
    assert len(store.clean_stale_tmp(tmp_path)) == 1
    assert len(list((tmp_path / "artifacts" / ".failed").iterdir())) == 3
