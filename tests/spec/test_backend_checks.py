"""Plan-time validation against verl's own config tree (imports verl: a few seconds)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from psft_orchestrator.plan.backend_checks import check_backends
from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.spec.errors import SpecError

pytestmark = pytest.mark.slow
SPEC = """
name: v
models: {m: {toy: micro}}
datasets: {d: {toy: math_sft, n: 512}}
stages:
  - name: train
    kind: psft
    backend: verl
    model: m
    data: d
    train_batch_size: 64
    mini_batch_size: 16
"""


def test_valid_verl_config_passes(tmp_path: Path):
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    check_backends(build_plan(spec, workspace=tmp_path / "ws"))


def test_verl_refuses_what_it_cannot_honour_at_plan_time(tmp_path: Path):
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(SPEC) + "    freeze: ['visual']\n")
    with pytest.raises(SpecError) as info:
        check_backends(build_plan(spec, workspace=tmp_path / "ws"))
    message = info.value.render()
    assert (
        f"{spec}:6:" in message
        and "verl rejects this psft config" in message
        and "freeze" in message
    )
