from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SMALL = Path(__file__).parent / "small.yaml"


def psft_run(
    *args: str, env: dict[str, str], timeout: int = 300, **kw
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
