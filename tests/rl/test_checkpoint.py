"""The DPO/GRPO checkpoint mechanism: save, then resume restores optimizer, scheduler, RNG, step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from psft_orchestrator.training import checkpoint
from psft_orchestrator.training.config import DPOConfig
from psft_orchestrator.training.optim import build_optimizer, build_scheduler


def _setup(model_dir: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = DPOConfig(lr=1e-3, warmup_ratio=0.1)
    opt = build_optimizer(model, cfg)
    return model, opt, build_scheduler(opt, cfg, total_steps=10)


def test_save_then_resume_round_trip(tmp_path: Path, micro_model: Path):
    model, opt, sched = _setup(micro_model)
    for _ in range(3):  # three real optimizer steps, so Adam has state
        model(
            input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])
        ).loss.backward()
        opt.step(), sched.step(), opt.zero_grad()
    ckpt_dir = tmp_path / "ckpt"
    checkpoint.save(ckpt_dir, "dpo", 2, 10, model, opt, sched)
    checkpoint.save(ckpt_dir, "dpo", 3, 10, model, opt, sched)
    rng = torch.get_rng_state()
    assert [p.name for p in ckpt_dir.glob("step_*")] == ["step_00000003"]  # only the newest kept

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)))
    torch.manual_seed(123)  # disturb the RNG: resume must restore it
    _, opt2, sched2 = _setup(ckpt_dir / "step_00000003" / "model")
    assert checkpoint.resume(ckpt_dir, "dpo", 10, opt2, sched2, metrics) == 3
    assert sched2.get_last_lr() == sched.get_last_lr()
    exp_avg = [s["exp_avg"] for s in opt.state_dict()["state"].values()]
    assert all(
        torch.equal(a, b["exp_avg"])
        for a, b in zip(exp_avg, opt2.state_dict()["state"].values(), strict=True)
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]

    with pytest.raises(ValueError, match="different run"):
        checkpoint.resume(ckpt_dir, "grpo", 10, opt2, sched2, metrics)
    assert checkpoint.resume(tmp_path / "none", "dpo", 10, opt2, sched2, metrics) == 0
