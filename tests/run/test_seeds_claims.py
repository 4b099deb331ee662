"""A run with `seeds:` and `claims: true` (set from the command line): seeded nodes run, the
claims are printed at the end of the run, and the table shows n per row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SMALL, psft_run

pytestmark = pytest.mark.slow


def test_seeds_and_claims_at_end_of_run(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    sets = ["--set", "seeds=[1, 2]", "--set", "claims=true"]
    proc = psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", *sets, env=fake_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = {json.loads(p.read_text())["node_id"] for p in ws.glob("artifacts/*/*/manifest.json")}
    assert ids == {
        f"{stage}[method={m},seed={s}]"
        for stage in ("train", "eval")
        for m in ("SFT", "PSFT")
        for s in (1, 2)
    }
    assert "claims (run " in proc.stdout
    for number in ("1", "2", "3", "4a", "4b"):
        assert any(line.startswith(f"{number} ") for line in proc.stdout.splitlines()), proc.stdout
