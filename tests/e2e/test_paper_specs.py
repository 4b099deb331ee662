"""Every paper spec's toy profile runs its whole DAG through the run layer (Ray, artifact store,
index, tables). The fake backend stands in for the stages, so the whole DAG of each spec fits
CI's budget; tests/e2e/test_paper_specs_real.py runs the same toy profiles for real, reduced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# Rows each spec's tables must show: the paper's method names survive the toy profile.
EXPECTED_ROWS = {
    "math_psft": ["Original", "SFT", "SFT_KL", "PSFT", "PSFT_warmup"],
    "math_grpo": ["GRPO", "SFT->GRPO", "PSFT->GRPO"],
    "alignment_dpo": ["SFT", "PSFT", "PSFT_prolong", "SFT->DPO", "PSFT->DPO", "PSFT_prolong->DPO"],
    "ablations": ["PSFT", "DFT", "iwSFT", "iwSFT_token"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_paper_spec_toy_profile_runs(name: str, tmp_path: Path, fake_env):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "psft_orchestrator.cli.run",
            str(REPO / "specs" / f"{name}.yaml"),
            "--profile",
            "toy",
            "--workspace",
            str(tmp_path / "ws"),
            "--no-prefect",
        ],
        env=fake_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " failed" not in proc.stdout.split("run summary")[1].splitlines()[0]
    for method in EXPECTED_ROWS[name]:
        assert f"| {method} |" in proc.stdout, (
            f"{method} missing from the tables:\n{proc.stdout[-3000:]}"
        )
