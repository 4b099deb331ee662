"""Synthetic workspaces written exactly as the run layer lays out node directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_nodes import toy_workspace


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    return toy_workspace(tmp_path / "ws")
