"""Fingerprint marks at the field: cadence settings keep a node cached, hyperparameters do not;
`--plan --explain` names the fields that differ from the closest cached node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_nodes import write_node

from psft_orchestrator.configs.stages import STAGE_MODELS
from psft_orchestrator.identity import fingerprint_fields, unmarked_fields
from psft_orchestrator.plan.fingerprint import backend_version
from psft_orchestrator.plan.planner import Plan, build_plan

SMALL = Path(__file__).resolve().parents[1] / "run" / "small.yaml"
NODE = "train[method=PSFT]"


@pytest.mark.parametrize("kind", sorted(STAGE_MODELS))
def test_every_stage_field_is_marked(kind: str) -> None:
    model = STAGE_MODELS[kind]
    assert unmarked_fields(model) == [], f"{kind}: declare these with param() or setting()"
    assert "lr" in fingerprint_fields(model) or kind in ("filter", "eval")
    assert not {"log_every", "save_every", "eval_every"} & set(fingerprint_fields(model))


def finish(plan: Plan, node_id: str) -> None:
    """Lay the node down as the run layer does when it succeeds (manifest, then _SUCCESS)."""
    node = plan.node(node_id)
    write_node(
        plan.workspace,
        stage=node.stage,
        kind=node.kind,
        labels=node.labels,
        node_id=node.id,
        config=node.config,
        fingerprint=node.fingerprint,
        backend_version=backend_version(node.backend),
        input_hashes=node.input_hashes,
    )


def test_cadence_keeps_a_node_cached_and_lr_does_not(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    finish(build_plan(SMALL, workspace=ws), NODE)
    for cadence in ("log_every=7", "save_every=3", "eval_every=5"):
        again = build_plan(SMALL, workspace=ws, overrides=[f"train.{cadence}"])
        assert again.node(NODE).is_done(ws), cadence
        assert again.node(NODE).config[cadence.split("=")[0]] == int(cadence.split("=")[1])
    changed = build_plan(SMALL, workspace=ws, overrides=["train.lr=3e-6"])
    assert not changed.node(NODE).is_done(ws)


def test_explain_names_the_differing_field(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    finish(build_plan(SMALL, workspace=ws), NODE)
    cmd = [sys.executable, "-m", "psft_orchestrator.cli.run", str(SMALL), "--workspace", str(ws)]
    out = subprocess.run(
        [*cmd, "--plan", "--explain", NODE, "--set", "train.lr=3e-6", "--set", "train.log_every=4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "(not cached)" in text and "    lr = 3e-06" in text
    assert "left out (settings): save_every, log_every" in text
    differs = text.split("differs in:")[1].strip().splitlines()
    assert differs == ["lr: 1e-06 (cached) -> 3e-06 (this node)"]  # log_every is no difference
    bad = subprocess.run(
        [*cmd, "--plan", "--explain", "train[method=XX]"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "did you mean" in bad.stderr
