"""Subprocess entry point of every node: `python -m psft_orchestrator.backends.worker JOB.json`.

The run layer starts this with the backend's interpreter (so verl and LLaMA-Factory may live in
their own environments), stdout/stderr going to the node's log. It loads the backend module
named by the job, calls its `run(job)`, and writes the returned summary to `summary.json`.
Exit status: 0 success, 3 deterministic failure (bad config, non-finite loss: do not retry),
1 anything else (may be retried).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from psft_orchestrator.contract import EXIT_DETERMINISTIC, EXIT_OK, EXIT_RETRYABLE, Job

# Errors that will happen again on retry: the run layer must not retry them.
DETERMINISTIC = (
    "NonFiniteLossError",
    "ValidationError",
    "ValueError",
    "FileNotFoundError",
    "OutOfMemoryError",
    "TypeError",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m psft_orchestrator.backends.worker JOB.json", file=sys.stderr)
        return 2
    for var, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("WANDB_MODE", "disabled"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(var, value)
    job = Job.load(Path(argv[0]))
    # One compute thread per CPU that Ray reserved for this node: more threads than cores spin
    # against each other (measured 10-60x slower on a busy 2-core machine).
    threads = str(max(1, int(job.config.resources.cpus)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    start = time.time()
    print(
        f"[worker] {job.node_id} kind={job.kind} backend={job.backend} pid={os.getpid()}",
        flush=True,
    )
    try:
        backend = job.backend
        if (
            os.environ.get("PSFT_FAKE_BACKEND") == "1"
        ):  # test tool: fast, realistic files, no training
            print(
                f"[worker] PSFT_FAKE_BACKEND=1: the fake backend stands in for {backend!r}",
                flush=True,
            )
            backend = "fake"
        module = importlib.import_module(f"psft_orchestrator.backends.{backend}")
        summary = module.run(job) or {}
    except BaseException as e:  # report every failure the same way, then exit non-zero
        traceback.print_exc()
        name = type(e).__name__
        print(f"[worker] FAILED {name}: {e}", flush=True)
        (job.out / "error.json").write_text(json.dumps({"type": name, "message": str(e)[:2000]}))
        return EXIT_DETERMINISTIC if name in DETERMINISTIC else EXIT_RETRYABLE
    summary = {
        k: v for k, v in summary.items() if isinstance(v, int | float | str | bool) or v is None
    }
    summary["backend_seconds"] = round(time.time() - start, 3)
    (job.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[worker] done in {summary['backend_seconds']}s", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
