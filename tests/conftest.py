"""Fixtures shared by the run-layer and end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI runs on the fake backend (PSFT_FAKE_BACKEND=1), private Prefect home."""
    env = dict(os.environ)
    env.update(
        PSFT_FAKE_BACKEND="1", RAY_AUTH_MODE="disabled", PREFECT_HOME=str(tmp_path / "prefect")
    )
    env.pop("PREFECT_API_URL", None)
    return env
