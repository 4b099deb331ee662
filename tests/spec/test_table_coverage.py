"""`--plan` says which cells of a spec's tables its eval nodes cannot fill, and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.results.coverage import table_notes

REPO = Path(__file__).resolve().parents[2]


def notes(tmp_path: Path, spec: str, *overrides: str) -> list[str]:
    plan = build_plan(REPO / "specs" / spec, tmp_path / "ws", "toy", list(overrides))
    return table_notes(plan)


def test_paper_tables_fill_from_their_toy_profiles(tmp_path: Path):
    assert notes(tmp_path, "math_psft.yaml") == []  # Tables 1-2: every row and column
    grpo = notes(tmp_path, "math_grpo.yaml")
    # Tables 3-4: the starting points SFT and PSFT are evaluated beside their ->GRPO rows
    assert not any("empty cells" in n for n in grpo), grpo
    missing = [
        m
        for n in grpo
        if "no rows with method " in n
        for m in n.split("no rows with method ")[1].split(":")[0].split(", ")
    ]
    assert not {"Original", "SFT", "PSFT", "SFT->GRPO", "PSFT->GRPO"} & set(missing), grpo


def test_unfillable_cells_are_named_with_the_reason(tmp_path: Path):
    math_only = "eval.suites=[{type: math, benchmarks: [AIME24]}]"
    found = notes(tmp_path, "math_psft.yaml", math_only)
    row = next(n for n in found if n.startswith("table table1: row Qwen2.5-7B-Instruct / SFT:"))
    assert "5 empty cells" in row and "AIME25 (no suite evaluates AIME25/aime_2025)" in row
    wrong_metric = "eval.suites=[{type: lmeval, name: x, benchmarks: [IFEval_loose]}]"
    found = notes(tmp_path, "math_psft.yaml", wrong_metric)
    row = next(n for n in found if n.startswith("table table2: row Qwen2.5-7B-Instruct / PSFT:"))
    assert "IFEval_loose (its suite reports acc, acc_norm, exact_match" in row


def test_plan_prints_the_notes(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "psft_orchestrator.cli.run",
            str(REPO / "specs" / "math_psft.yaml"),
            "--profile",
            "toy",
            "--plan",
            "--workspace",
            str(tmp_path / "ws"),
            "--set",
            "eval.suites=[{type: math, benchmarks: [AIME24]}]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "note: tables:" in proc.stderr and "empty cells" in proc.stderr
    assert not (tmp_path / "ws").exists()
