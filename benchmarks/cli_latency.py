"""CLI latency: `--help`, `--plan`, and how fast an invalid spec is rejected.

Each number is the median of N runs of a fresh interpreter, printed next to the interpreter's
own start-up (`python -c pass`) measured in the same run, so the ratio shows what our code adds.

    .venv/bin/python benchmarks/cli_latency.py [-n 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    n = ap.parse_args().n
    ws = tempfile.mkdtemp()
    base = timed(["-c", "pass"], n)
    rows = [
        ("python -c pass (baseline)", base),
        ("psft-run --help", timed(["-m", "psft_orchestrator.cli.run", "--help"], n)),
        ("psft-results --help", timed(["-m", "psft_orchestrator.cli.results", "--help"], n)),
        (
            "psft-run specs/demo.yaml --plan",
            timed(
                ["-m", "psft_orchestrator.cli.run", "specs/demo.yaml", "--plan", "--workspace", ws],
                n,
            ),
        ),
    ]
    broken = sorted((REPO / "tests" / "spec" / "broken").glob("*.yaml"))
    per_spec = [
        timed(["-m", "psft_orchestrator.cli.run", str(p), "--workspace", ws], 1) for p in broken
    ]
    rows.append((f"invalid spec rejected (median of {len(broken)})", statistics.median(per_spec)))
    rows.append((f"invalid spec rejected (slowest of {len(broken)})", max(per_spec)))
    for name, t in rows:
        print(f"{name:45s} {t:6.3f} s   {t / base:5.1f}x baseline")


if __name__ == "__main__":
    main()
