from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = Path(__file__).parent / "small.yaml"


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI runs on the fake backend, with a private Prefect home."""
    env = dict(os.environ)
    env.update(
        PSFT_FAKE_BACKEND="1", RAY_AUTH_MODE="disabled", PREFECT_HOME=str(tmp_path / "prefect")
    )
    env.pop("PREFECT_API_URL", None)
    return env


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
