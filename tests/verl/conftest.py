"""Fixtures for the verl backend tests.

No `__init__.py` in this folder on purpose: it would make `tests/verl` importable as a package
named `verl` and shadow the real one. `verl_cpu_platform.py` here is the test-only CPU platform
plug-in that verl's subprocesses load (VERL_USE_EXTERNAL_MODULES).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture
def cpu_shim(monkeypatch):
    """Environment under which verl's subprocesses load the CPU platform plug-in."""
    import os

    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "verl_cpu_platform")
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    )
