from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SMALL = Path(__file__).parent / "small.yaml"


def run_cmd(*args: str) -> list[str]:
    """The psft-run command line, with this interpreter."""
    return [sys.executable, "-m", "psft_orchestrator.cli.run", *args]


def psft_run(
    *args: str, env: dict[str, str], timeout: int = 300, **kw
) -> subprocess.CompletedProcess:
    return subprocess.run(
        run_cmd(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
