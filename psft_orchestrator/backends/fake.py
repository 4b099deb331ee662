"""A fake backend for testing the orchestration layer quickly (never used for results).

Selected for every node when `PSFT_FAKE_BACKEND=1` is set (the worker says so in the node's
log). It writes the same files a real backend writes — metrics.jsonl, outputs of the node's
artifact type, summary — derived deterministically from the fingerprint, so the run layer,
the artifact store and the results index can be tested in seconds.

Knobs (environment): PSFT_FAKE_SLEEP (seconds per node), PSFT_FAKE_FAIL (substring of node
ids that fail with a deterministic error), PSFT_FAKE_FLAKY (substring of node ids that fail with
a non-deterministic error, which the run layer retries once), PSFT_FAKE_STEPS (metric rows, default 5),
PSFT_FAKE_KILL_WORKER (a file path: if it does not exist yet, create it and SIGKILL the Ray
worker that started this process: an infrastructure failure, which the run layer retries).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from psft_orchestrator.contract import Job, MetricsWriter, write_progress


def run(job: Job) -> dict[str, Any]:
    fail = os.environ.get("PSFT_FAKE_FAIL")
    if fail and fail in job.node_id:
        raise ValueError(f"fake failure requested for {job.node_id} (PSFT_FAKE_FAIL={fail})")
    flaky = os.environ.get("PSFT_FAKE_FLAKY")
    if flaky and flaky in job.node_id:
        raise RuntimeError(f"fake flaky failure for {job.node_id} (PSFT_FAKE_FLAKY={flaky})")
    marker = os.environ.get("PSFT_FAKE_KILL_WORKER")
    if marker and _claim(Path(marker), job.node_id):  # exactly one node, once
        os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker; we die with it (PDEATHSIG)
        time.sleep(30)
    steps = int(os.environ.get("PSFT_FAKE_STEPS", "5"))
    sleep = float(os.environ.get("PSFT_FAKE_SLEEP", "0"))
    seed = int(job.fingerprint[:8], 16)
    with MetricsWriter(job.out / "metrics.jsonl") as m:
        for step in range(1, steps + 1):
            time.sleep(sleep / steps)
            m.log(
                step, loss=1.0 / step + (seed % 7) / 100, entropy=2.0 - step / (steps * 2), lr=1e-5
            )
            write_progress(job.out, step, steps)
            print(f"step {step}/{steps}", flush=True)
    out = job.output_path()
    if job.output_type == "model":
        out.mkdir(parents=True, exist_ok=True)
        src = Path(job.input("model").path) if "model" in job.inputs else None
        if src and src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True)
        (out / "fake.json").write_text(json.dumps({"node": job.node_id}))
    elif job.output_type == "eval":
        out.write_text(json.dumps(_fake_scores(job, seed)))
    else:
        shutil.copyfile(job.input("data").path, out)
    return {"loss": 1.0 / steps, "fake": True}


# The metric names each suite type reports (see psft_orchestrator.evals).
SUITE_METRICS = {
    "math": lambda suite: [f"avg@{suite.get('k', 1)}", f"pass@{suite.get('k', 1)}"],
    "rules": lambda suite: ["strict_acc", "loose_acc"],
    "judge": lambda suite: ["score", "win_rate"],
    "lmeval": lambda suite: ["acc"],
}


def _fake_scores(job: Job, seed: int) -> list[dict[str, Any]]:
    rows = []
    for suite in job.config_data().get("suites", []):
        for i, bench in enumerate(suite.get("benchmarks", [])):
            for metric in SUITE_METRICS[suite["type"]](suite):
                value = float((seed >> (i % 24)) % 100)
                rows.append(
                    {
                        "suite": suite.get("name") or suite["type"],
                        "benchmark": bench,
                        "metric": metric,
                        "value": value,
                        "n": 10,
                    }
                )
    return rows


def _claim(marker: Path, node_id: str) -> bool:
    """Create `marker` atomically; False if another process already did (concurrent nodes)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(node_id)
    return True
