"""Start-up time, orchestration overhead per node, and the all-cached rerun time.

Start-up = from launching `psft-run` to the first node running (the run's status file records
that moment); the target is <= 10 s without a Prefect server running.

Runs a spec on the fake backend (PSFT_FAKE_BACKEND=1: each node's backend does almost nothing
and reports its own run time), first through Prefect with Ray, then again fully cached.
Overhead per node = node wall time (as the run layer measured it) - the backend's own seconds.

    .venv/bin/python benchmarks/orchestration.py [SPEC] [--no-prefect]

With PREFECT_API_URL pointing at a running server (`make ui`), the flow run is recorded there;
without it Prefect starts a temporary server, whose start-up is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(spec: str, ws: Path, prefect: bool) -> tuple[float, float | None]:
    """(wall seconds, seconds until the first node ran or None when every node was cached)."""
    cmd = [
        sys.executable,
        "-m",
        "psft_orchestrator.cli.run",
        spec,
        "--workspace",
        str(ws),
        "--quiet",
    ]
    if not prefect:
        cmd.append("--no-prefect")
    start, start_clock = time.perf_counter(), time.time()
    (ws / "status.json").unlink(missing_ok=True)
    subprocess.run(
        cmd,
        check=True,
        env={**os.environ, "PSFT_FAKE_BACKEND": "1", "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    try:
        first = json.loads((ws / "status.json").read_text()).get("first_node_at")
    except OSError:
        first = None
    return wall, (first - start_clock if first else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(REPO / "specs" / "demo.yaml"))
    ap.add_argument("--no-prefect", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        first, startup = run(args.spec, ws, not args.no_prefect)
        record = json.loads(sorted((ws / "runs").glob("*.json"))[-1].read_text())
        overheads = []
        for n in record["nodes"]:
            summary = json.loads(
                next(ws.glob(f"artifacts/*/{n['fingerprint'][:16]}/summary.json")).read_text()
            )
            overheads.append(n["duration_s"] - summary["backend_seconds"])
        cached, _ = run(args.spec, ws, not args.no_prefect)
    print(f"spec {args.spec}: {len(overheads)} nodes, prefect={'off' if args.no_prefect else 'on'}")
    print(
        f"  first run wall time            {first:7.2f} s (includes Ray start and, without a server, Prefect's)"
    )
    print(
        f"  start-up to first node running {startup:7.2f} s  (target <= 10 s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print(
        f"  overhead per node, median      {statistics.median(overheads):7.2f} s  (max {max(overheads):.2f} s)"
    )
    print(f"  all-cached rerun wall time     {cached:7.2f} s")
    print(f"  cached rerun / first run       {cached / first:7.3f}")


if __name__ == "__main__":
    main()
