"""`seeds:` as a matrix axis: expansion, pairing with upstream seeds, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.spec.errors import SpecError

SPEC = """
name: s
seeds: [1, 2, 3]
models:
  m: {toy: micro}
datasets:
  d: {toy: math_sft, n: 512}
  p: {toy: preference, n: 64}
  b: {toy: math_bench, n: 8}
methods:
  SFT: {kind: sft}
  PSFT: {kind: psft, preset: math_psft}
stages:
  - name: base_eval
    kind: eval
    model: m
    suites: [{type: math, benchmarks: [b]}]
  - name: train
    model: m
    data: d
    matrix: {method: [SFT, PSFT]}
  - name: dpo
    kind: dpo
    model: {from: train, where: {method: PSFT}}
    data: p
  - name: eval
    kind: eval
    model: {from: dpo}
    suites: [{type: math, benchmarks: [b]}]
"""


def plan_of(tmp_path: Path, text: str):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(text))
    return build_plan(spec, workspace=tmp_path / "ws")


def test_top_level_seeds_expand_training_and_pair_downstream(tmp_path: Path):
    plan = plan_of(tmp_path, SPEC)
    ids = [n.id for n in plan.nodes]
    assert "base_eval" in ids  # evals of a declared model are not seeded
    train = [n for n in plan.nodes if n.stage == "train"]
    assert len(train) == 6 and {n.stage_model.seed for n in train} == {1, 2, 3}
    dpo = [n for n in plan.nodes if n.stage == "dpo"]
    # dpo's own seed axis pairs with train's instead of crossing it: 3 nodes, not 9
    assert [n.id for n in dpo] == [f"dpo[method=PSFT,seed={s}]" for s in (1, 2, 3)]
    for n in dpo:
        assert n.stage_model.seed == n.parents["model"].stage_model.seed == n.coords["seed"]
    evals = [n for n in plan.nodes if n.stage == "eval"]
    assert sorted(n.labels["seed"] for n in evals) == [1, 2, 3]
    assert len({n.fingerprint for n in train}) == 6


def test_stage_seeds_win_and_mismatch_is_an_error(tmp_path: Path):
    text = SPEC.replace("  - name: dpo\n", "  - name: dpo\n    seeds: [2]\n")
    plan = plan_of(tmp_path, text)
    assert [n.id for n in plan.nodes if n.stage == "dpo"] == ["dpo[method=PSFT,seed=2]"]
    bad = SPEC.replace("  - name: dpo\n", "  - name: dpo\n    seeds: [9]\n")
    with pytest.raises(SpecError, match="seed 9 has no upstream node to pair with"):
        plan_of(tmp_path, bad)


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("top", "[]", "must be a non-empty list of seeds"),
        ("stage", "[]", "must be a non-empty list of seeds"),
        ("stage", "[1, 1]", "seeds must be distinct"),
        ("stage", "[-1]", "non-negative integers"),
    ],
)
def test_bad_seeds_name_file_and_line(tmp_path: Path, where: str, value: str, message: str):
    if where == "top":
        text = SPEC.replace("seeds: [1, 2, 3]", f"seeds: {value}")
        line = 3
    else:
        text = SPEC.replace("  - name: dpo\n", f"  - name: dpo\n    seeds: {value}\n")
        line = text.splitlines().index(f"    seeds: {value}") + 1
    with pytest.raises(SpecError) as info:
        plan_of(tmp_path, text)
    rendered = info.value.render()
    assert message in rendered and f"spec.yaml:{line}:" in rendered, rendered
    assert not (tmp_path / "ws").exists()


def test_cli_empty_seeds_exit_2_nothing_written(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(SPEC).replace("seeds: [1, 2, 3]", "seeds: []"))
    ws = tmp_path / "ws"
    proc = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.run", str(spec), "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and f"{spec}:3:" in proc.stderr, proc.stderr
    assert not ws.exists()
