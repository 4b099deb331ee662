"""Valid specs: composition precedence, matrix fan-out, fingerprints, cache status, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psft_orchestrator.plan.planner import build_plan

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.yaml"))


def write(tmp: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text))
    return p


BASE = """
name: t
models:
  m: {toy: micro}
datasets:
  d: {toy: math_sft, n: 512}
  b: {toy: math_bench, n: 8}
methods:
  SFT: {kind: sft, lr: 0.01}
  PSFT: {kind: psft, preset: math_psft, lr: 0.02}
defaults:
  seed: 7
stages:
  - name: train
    model: m
    data: d
    max_length: 512
    lr: 0.5
    matrix:
      method: [SFT, PSFT]
      seed: [1, 2]
      exclude: [{method: SFT, seed: 2}]
  - name: eval
    kind: eval
    model: {from: train}
    suites: [{type: math, benchmarks: [b]}]
"""


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_plans(spec: Path, tmp_path: Path):
    plan = build_plan(spec, workspace=tmp_path)
    assert plan.nodes
    assert all(len(n.fingerprint) == 64 for n in plan.nodes)


def test_matrix_fan_out_and_ids(tmp_path: Path):
    plan = build_plan(write(tmp_path, BASE), workspace=tmp_path / "ws")
    ids = [n.id for n in plan.nodes]
    assert ids == [
        "train[method=SFT,seed=1]",
        "train[method=PSFT,seed=1]",
        "train[method=PSFT,seed=2]",
        "eval[method=SFT,seed=1]",
        "eval[method=PSFT,seed=1]",
        "eval[method=PSFT,seed=2]",
    ]
    ev = plan.node("eval[method=PSFT,seed=2]")
    assert ev.parents["model"].id == "train[method=PSFT,seed=2]"
    assert ev.labels["method"] == "PSFT" and ev.labels["model"] == "m" and ev.labels["seed"] == 2


def test_precedence_defaults_preset_stage_method_matrix(tmp_path: Path):
    plan = build_plan(write(tmp_path, BASE), workspace=tmp_path / "ws")
    sft = plan.node("train[method=SFT,seed=1]").stage_model
    psft = plan.node("train[method=PSFT,seed=2]").stage_model
    assert sft.kind == "sft" and psft.kind == "psft"
    assert sft.lr == 0.01 and psft.lr == 0.02  # method beats stage (0.5) and preset (1e-6)
    assert psft.mini_batch_size == 32 and psft.epochs == 10  # from the preset
    assert psft.max_length == 512  # stage beats preset (10240)
    assert psft.seed == 2  # matrix beats defaults (7)


def test_set_override_beats_method_fields(tmp_path: Path):
    """`--set train.lr=...` (the README's example) wins although both methods set lr."""
    spec = write(tmp_path, BASE)
    plan = build_plan(spec, workspace=tmp_path / "ws", overrides=["train.lr=0.003"])
    assert {n.stage_model.lr for n in plan.nodes if n.stage == "train"} == {0.003}
    from psft_orchestrator.spec.errors import SpecError

    with pytest.raises(SpecError, match="'seed' is a matrix axis of stage 'train'"):
        build_plan(spec, workspace=tmp_path / "ws", overrides=["train.seed=3"])


def test_set_override_of_matrix_axis_and_seeds(tmp_path: Path):
    """What the error above advises: `--set STAGE.matrix.AXIS=[...]` (and `STAGE.seeds=`)
    replace the stage's cells, and downstream stages fan out over the new ones."""
    spec = write(tmp_path, BASE)
    plan = build_plan(spec, workspace=tmp_path / "ws", overrides=["train.matrix.method=[PSFT]"])
    assert [n.id for n in plan.nodes if n.stage == "eval"] == [
        "eval[method=PSFT,seed=1]",
        "eval[method=PSFT,seed=2]",
    ]
    unseeded = BASE.replace("      seed: [1, 2]\n      exclude: [{method: SFT, seed: 2}]\n", "")
    spec = write(tmp_path, unseeded, "unseeded.yaml")
    plan = build_plan(spec, workspace=tmp_path / "ws", overrides=["train.seeds=[4, 5]"])
    assert {n.stage_model.seed for n in plan.nodes if n.stage == "train"} == {4, 5}


def test_set_override_changes_only_downstream(tmp_path: Path):
    spec = write(tmp_path, BASE)
    a = {n.id: n.fingerprint for n in build_plan(spec, workspace=tmp_path / "ws").nodes}
    b_plan = build_plan(spec, workspace=tmp_path / "ws", overrides=["train.max_length=256"])
    b = {n.id: n.fingerprint for n in b_plan.nodes}
    assert all(a[k] != b[k] for k in a)  # every node is downstream of train
    assert b_plan.node("train[method=SFT,seed=1]").stage_model.max_length == 256
    c = {
        n.id: n.fingerprint
        for n in build_plan(spec, workspace=tmp_path / "ws", overrides=["eval.description=x"]).nodes
    }
    assert c == a  # descriptions are not part of the fingerprint


def test_fingerprint_tracks_input_content(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    )
    spec = write(
        tmp_path,
        """
        name: t
        models: {m: {toy: micro}}
        datasets: {d: {path: d.jsonl, type: dataset}}
        stages: [{name: s, kind: sft, model: m, data: d, train_batch_size: 1}]
    """,
    )
    fp1 = build_plan(spec, workspace=tmp_path / "ws").nodes[0].fingerprint
    assert build_plan(spec, workspace=tmp_path / "ws").nodes[0].fingerprint == fp1
    data.write_text(data.read_text() * 2)
    assert build_plan(spec, workspace=tmp_path / "ws").nodes[0].fingerprint != fp1


def test_cache_status_from_success_marker(tmp_path: Path):
    plan = build_plan(write(tmp_path, BASE), workspace=tmp_path / "ws")
    node = plan.nodes[0]
    assert not node.is_done(plan.workspace)
    node.artifact_dir(plan.workspace).mkdir(parents=True)
    (node.artifact_dir(plan.workspace) / "_SUCCESS").write_text("")
    assert node.is_done(plan.workspace)


def test_profile_and_extends(tmp_path: Path):
    (tmp_path / "pipelines").mkdir()
    write(
        tmp_path / "pipelines",
        """
        name: tmpl
        models: {m: {toy: micro}}
        datasets: {d: {toy: math_sft, n: 512}}
        stages: [{name: s, kind: sft, model: m, data: d, lr: 0.1}]
        profiles:
          small: {stages: [{name: s, lr: 0.3, train_batch_size: 4}], datasets: {d: {n: 4}}}
    """,
        "tmpl.yaml",
    )
    spec = write(
        tmp_path,
        """
        extends: tmpl
        name: child
        stages: [{name: s, epochs: 3}]
    """,
    )
    plan = build_plan(spec, workspace=tmp_path / "ws")
    s = plan.nodes[0].stage_model
    assert (plan.pipeline.name, s.lr, s.epochs) == ("child", 0.1, 3)
    small = build_plan(spec, workspace=tmp_path / "ws", profile="small")
    assert small.nodes[0].stage_model.lr == 0.3 and small.pipeline.datasets["d"].n == 4


def test_plan_cli_json_and_fast_help(tmp_path: Path):
    spec = write(tmp_path, BASE)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "psft_orchestrator.cli.run",
            str(spec),
            "--plan",
            "--json",
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    assert [n["status"] for n in data["nodes"]] == ["todo"] * 6
    assert not (tmp_path / "ws").exists()  # --plan writes nothing
    # --help and --plan stay fast because they import no heavy library (timed: benchmarks/cli_latency.py).
    probe = (
        "import sys, contextlib, io\n"
        "from psft_orchestrator.cli import run\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    run.main(['--help'])\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    run.main([{str(spec)!r}, '--plan', '--workspace', {str(tmp_path / 'ws')!r}])\n"
        "heavy = ('torch', 'ray', 'prefect', 'transformers', 'duckdb', 'verl')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_plan_json_resolved_config_and_force_preview(tmp_path: Path):
    spec, ws = write(tmp_path, BASE), tmp_path / "ws"
    plan = build_plan(spec, workspace=ws)
    for node in plan.nodes:  # everything done: only --force makes anything run
        node.artifact_dir(ws).mkdir(parents=True)
        (node.artifact_dir(ws) / "_SUCCESS").write_text("")

    def plan_cli(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "psft_orchestrator.cli.run", str(spec), "--plan"]
        return subprocess.run(
            [*cmd, "--workspace", str(ws), *extra], capture_output=True, text=True, timeout=60
        )

    data = json.loads(plan_cli("--json", "--force", "train[method=PSFT,seed=2]").stdout)
    status = {n["id"]: n["status"] for n in data["nodes"]}
    assert status.pop("train[method=PSFT,seed=2]") == status.pop("eval[method=PSFT,seed=2]")
    assert set(status.values()) == {"done"}
    assert data["forced"] == ["eval[method=PSFT,seed=2]", "train[method=PSFT,seed=2]"]
    psft = next(n for n in data["nodes"] if n["id"] == "train[method=PSFT,seed=2]")
    assert psft["status"] == "forced"
    assert (psft["config"]["lr"], psft["config"]["seed"], psft["config"]["max_length"]) == (
        0.02,
        2,
        512,
    )
    text = plan_cli("--force", "train").stdout
    assert "6 to run (6 of them done but forced: rerun)" in text
    bad = plan_cli("--force", "trian")
    assert bad.returncode == 2 and "did you mean 'train'?" in bad.stderr


def test_overlay_error_points_at_overlay_line(tmp_path: Path):
    """A bad value that a profile merges into an existing stage is reported at the profile's line."""
    spec = write(
        tmp_path,
        """
        name: t
        models: {m: {toy: micro}}
        datasets: {d: {toy: math_sft, n: 512}}
        stages:
          - name: s
            kind: sft
            model: m
            data: d
        profiles:
          bad:
            stages:
              - name: s
                lr: -1
    """,
    )
    from psft_orchestrator.spec.errors import SpecError

    with pytest.raises(SpecError) as info:
        build_plan(spec, workspace=tmp_path / "ws", profile="bad")
    assert f"{spec}:14: s.lr: Input should be greater than 0" in info.value.render()


def test_downstream_label_templates_survive_fan_out(tmp_path: Path):
    """eval of dpo[method=SFT] is labelled SFT->DPO (the inherited coordinate must not undo it)."""
    text = BASE.replace(
        "  b: {toy: math_bench, n: 8}",
        "  b: {toy: math_bench, n: 8}\n  p: {toy: preference, n: 64}",
    )
    text += """
  - name: dpo
    kind: dpo
    model: {from: train, where: {method: [SFT]}}
    data: p
    labels: {method: "{method}->DPO"}
  - name: eval_dpo
    kind: eval
    model: {from: dpo}
    suites: [{type: math, benchmarks: [b]}]
"""
    plan = build_plan(write(tmp_path, text), workspace=tmp_path / "ws")
    assert [n.id for n in plan.nodes if n.stage == "dpo"] == ["dpo[method=SFT,seed=1]"]
    assert plan.node("dpo[method=SFT,seed=1]").labels["method"] == "SFT->DPO"
    assert plan.node("eval_dpo[method=SFT,seed=1]").labels["method"] == "SFT->DPO"
    assert plan.node("eval[method=SFT,seed=1]").labels["method"] == "SFT"


def test_every_spec_field_is_documented():
    """Issue 2: every field a spec can set has a description (it shows in errors and docs)."""
    from psft_orchestrator.configs.evals import JudgeSuite, LMEvalSuite, MathSuite, RulesSuite
    from psft_orchestrator.configs.stages import STAGE_MODELS, FromRef, Resources
    from psft_orchestrator.configs.training import KLConfig
    from psft_orchestrator.spec.schema import DatasetDecl, ModelDecl, Pipeline

    models = [
        *STAGE_MODELS.values(),
        Pipeline,
        ModelDecl,
        DatasetDecl,
        FromRef,
        Resources,
        KLConfig,
        MathSuite,
        LMEvalSuite,
        RulesSuite,
        JudgeSuite,
    ]
    missing = [
        f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description
    ]
    assert not missing, missing
