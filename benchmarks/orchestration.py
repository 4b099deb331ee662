"""Start-up time, orchestration overhead per node, and the all-cached rerun time.

Start-up = from launching `psft-run` to the first node running (the run's status file records
that moment); the target is <= 10 s without a Prefect server running.

Runs a spec on the fake backend (PSFT_FAKE_BACKEND=1: each node's backend does almost nothing
and reports its own run time), first through Prefect with Ray, then again fully cached.
Overhead per node = node wall time (as the run layer measured it) - the backend's own seconds.

    .venv/bin/python benchmarks/orchestration.py [SPEC] [--no-prefect]

With PREFECT_API_URL pointing at a running server (`make ui`), the flow run is recorded there;
without it Prefect starts a temporary server, whose start-up is reported separately.

Two more figures (docs/cluster.md), each against its baseline measured in the same process:

    --cluster  per-node overhead on a real 2-node Ray cluster (`ray start --head` + `ray start
               --address` on this machine, 1 CPU each; torn down by its own PIDs) vs the local
               cluster psft-run starts (as many CPUs as this process may use);
    --store    a second workspace's run with the shared store warm vs the first one's, cold.
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


def run(
    spec: str, ws: Path, prefect: bool, *args: str, env: dict[str, str] | None = None
) -> tuple[float, float | None]:
    """(wall seconds, seconds until the first node ran or None when every node was cached)."""
    cmd = [
        sys.executable,
        "-m",
        "psft_orchestrator.cli.run",
        spec,
        "--workspace",
        str(ws),
        "--quiet",
        *args,
    ]
    if not prefect:
        cmd.append("--no-prefect")
    start, start_clock = time.perf_counter(), time.time()
    (ws / "status.json").unlink(missing_ok=True)
    subprocess.run(
        cmd,
        check=True,
        env={
            **os.environ,
            "PSFT_FAKE_BACKEND": "1",
            "RAY_AUTH_MODE": "disabled",
            "PSFT_STORE": "off",
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    try:
        first = json.loads((ws / "status.json").read_text()).get("first_node_at")
    except OSError:
        first = None
    return wall, (first - start_clock if first else None)


BARE_RAY = """
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.get(ray.remote(lambda: 1).remote())
"""


def bare_ray_start() -> float:
    """The floor of any run's start-up: a fresh interpreter starts Ray and runs one task."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", BARE_RAY],
        check=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
    )
    return time.perf_counter() - start


def node_overheads(ws: Path) -> list[float]:
    """Per computed node of the latest run: its wall time minus the backend's own seconds."""
    record = json.loads(sorted((ws / "runs").glob("*.json"))[-1].read_text())
    overheads = []
    for n in record["nodes"]:
        if n["status"] != "success":
            continue
        summary = json.loads(
            next(ws.glob(f"artifacts/*/{n['fingerprint'][:16]}/summary.json")).read_text()
        )
        overheads.append(n["duration_s"] - summary["backend_seconds"])
    return overheads


def cluster_figure(spec: str, tmp: Path) -> None:
    """Median per-node overhead: 2-node `ray start` cluster vs the local cluster, same spec."""
    sys.path.insert(0, str(REPO / "tests" / "run"))
    from ray_cluster import LocalRayCluster

    from psft_orchestrator.run.cluster import usable_cpus

    run(spec, tmp / "local", False)
    local = node_overheads(tmp / "local")
    cluster = LocalRayCluster()
    try:
        cluster.add_node({"head": 1}, head=True)
        cluster.add_node({"worker": 1})
        cluster.wait_for_nodes(2)
        run(spec, tmp / "cluster", False, "--ray-address", cluster.address)
        remote = node_overheads(tmp / "cluster")
    finally:
        cluster.stop()
    a, b = statistics.median(local), statistics.median(remote)
    print(f"per-node overhead, median over {len(local)} nodes (fake backend, --no-prefect)")
    print(f"  local cluster ({usable_cpus()} CPUs)          {a:7.2f} s  (max {max(local):.2f} s)")
    print(f"  2-node cluster (1 CPU each)   {b:7.2f} s  (max {max(remote):.2f} s)")
    print(f"  2-node / local                {b / a:7.2f}")


def store_figure(spec: str, tmp: Path, prefect: bool) -> None:
    """A second workspace's run with the shared store warm, against the first one's (cold)."""
    env = {"PSFT_STORE": str(tmp / "store")}
    cold, _ = run(spec, tmp / "first", prefect, env=env)
    warm, _ = run(spec, tmp / "second", prefect, env=env)
    print(f"shared store: the same spec in a new workspace (fake backend, prefect={prefect})")
    print(f"  first workspace, store cold   {cold:7.2f} s")
    print(f"  second workspace, store warm  {warm:7.2f} s")
    print(f"  warm / cold                   {warm / cold:7.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(REPO / "specs" / "demo.yaml"))
    ap.add_argument("--no-prefect", action="store_true")
    ap.add_argument("--cluster", action="store_true", help="2-node cluster vs local overhead")
    ap.add_argument("--store", action="store_true", help="warm vs cold shared store")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start")
    if args.cluster or args.store:
        with tempfile.TemporaryDirectory() as tmp:
            if args.cluster:
                cluster_figure(args.spec, Path(tmp))
            if args.store:
                store_figure(args.spec, Path(tmp), not args.no_prefect)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        floor = bare_ray_start()
        first, startup = run(args.spec, ws, not args.no_prefect)
        overheads = node_overheads(ws)
        cached, _ = run(args.spec, ws, not args.no_prefect)
    print(f"spec {args.spec}: {len(overheads)} nodes, prefect={'off' if args.no_prefect else 'on'}")
    print(
        f"  first run wall time            {first:7.2f} s (includes Ray start and, without a server, Prefect's)"
    )
    print(
        f"  start-up to first node running {startup:7.2f} s  (target <= 10 s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print(f"  baseline: bare Ray start + 1 task {floor:7.2f} s  (same run, a fresh interpreter)")
    print(f"  start-up / bare Ray start      {startup / floor:7.2f}")
    print(
        f"  overhead per node, median      {statistics.median(overheads):7.2f} s  (max {max(overheads):.2f} s)"
    )
    print(f"  all-cached rerun wall time     {cached:7.2f} s")
    print(f"  cached rerun / first run       {cached / first:7.3f}")


if __name__ == "__main__":
    main()
