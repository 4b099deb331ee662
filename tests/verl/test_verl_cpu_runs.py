"""sft, dft and psft for real on verl (its SFT trainer, training worker and FSDP2 engine) on CPU,
through the test-only platform plug-in. A few steps of the toy micro model each.

Cross-checks that only the real thing can fail: dft's plain CE at step 1 equals sft's loss at
step 1 (same data order, same weights); psft's first mini-batch has ratio 1 (loss −1, ppo_kl 0),
which holds only if the forward-only θ_old pass and the training forward see the same tokens
with the same alignment; the exported model is fp32, loads, and moved away from the base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psft_orchestrator.contract import InputRef, Job

pytestmark = pytest.mark.slow
BASE = {
    "lr": 1e-4,
    "train_batch_size": 8,
    "micro_batch_size": 4,
    "max_length": 64,
    "max_steps": 3,
    "dtype": "float32",
    "lr_scheduler": "constant",
    "seed": 1,
}


def run_kind(
    kind: str, config: dict, root: Path, model: Path, data: Path
) -> tuple[Job, dict, list[dict]]:
    from psft_orchestrator.backends.verl import run

    node = root / "node"
    node.mkdir(parents=True)
    job = Job(
        node_id=f"train[method={kind}]",
        stage="train",
        kind=kind,
        backend="verl",
        fingerprint="f" * 64,
        config=config,
        inputs={
            "model": InputRef(type="model", path=str(model)),
            "data": InputRef(type="dataset", path=str(data)),
        },
        node_dir=str(node),
        checkpoint_dir=str(root / "ckpt"),
        output_type="model",
    )
    summary = run(job)
    rows = [json.loads(x) for x in (node / "metrics.jsonl").read_text().splitlines()]
    return job, summary, rows


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, micro_model, reverse_data):
    mp = pytest.MonkeyPatch()
    import os

    from conftest import HERE, REPO

    mp.setenv("VERL_USE_EXTERNAL_MODULES", "verl_cpu_platform")
    mp.setenv("VERL_PLATFORM", "cpu")
    mp.setenv(
        "PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    try:
        yield run_kind("sft", BASE, tmp_path_factory.mktemp("verl_sft"), micro_model, reverse_data)
    finally:
        mp.undo()


def test_sft(sft_run, micro_model):
    import torch
    from transformers import AutoModelForCausalLM

    job, summary, rows = sft_run
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(0 < r["loss"] < 20 and r["lr"] == 1e-4 and r["grad_norm"] > 0 for r in rows)
    out = job.output_path()
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(micro_model)
    assert trained.dtype == torch.float32  # verl stamps bfloat16 into config.json; we restore it
    assert not torch.equal(trained.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()
    config = (job.out / "verl" / "config.yaml").read_text()
    assert "lr: 0.0001" in config and "hf_model" in config
    assert summary["checkpoint"] == "global_step_3"


def test_dft(sft_run, cpu_shim, tmp_path, micro_model, reverse_data):
    _, _, rows = run_kind("dft", BASE, tmp_path, micro_model, reverse_data)
    sft_rows = sft_run[2]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # identical weights and batch at step 1: the plain CE logged by DFT is SFT's loss
    assert rows[0]["ce"] == pytest.approx(sft_rows[0]["loss"], rel=1e-5)
    # a near-uniform random model has p ≈ 1/V, so the DFT loss is far below the CE
    assert all(0 < r["loss"] < r["ce"] / 100 for r in rows)
    assert all(r["entropy"] > 0 for r in rows)


def test_psft(cpu_shim, tmp_path, micro_model, reverse_data):
    config = {**BASE, "lr": 1e-3, "mini_batch_size": 4, "max_steps": 4}
    job, summary, rows = run_kind("psft", config, tmp_path, micro_model, reverse_data)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert {
            "loss",
            "entropy",
            "clipfrac",
            "clipfrac_lower",
            "ppo_kl",
            "grad_norm",
            "lr",
        } <= set(r)
        assert r["clipfrac_lower"] == 0.0
    first = [rows[0], rows[2]]  # first mini-batch of each train batch: θ_old = θ
    for r in first:
        assert r["loss"] == pytest.approx(-1.0, abs=1e-6)
        assert r["ppo_kl"] == pytest.approx(0.0, abs=1e-6)
    # second mini-batch: θ moved one step away from θ_old; the PSFT loss is -min(r, 1+ε) < -1 here
    assert rows[1]["ppo_kl"] != 0.0 and rows[1]["loss"] < -1.0
    assert summary["checkpoint"] == "global_step_2"
    assert (job.output_path() / "model.safetensors").exists()
