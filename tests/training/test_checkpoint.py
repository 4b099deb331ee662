"""The one checkpoint format: round trip (optimizer, scheduler, RNG, step, metrics), a torn or
corrupted newest checkpoint is detected and the previous one used, and every trainer resumes
bit-identically from it (SFT family in test_loop, here DPO, GRPO and pretrain through a fallback)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from psft_orchestrator.configs.training import DPOConfig, SFTConfig
from psft_orchestrator.training import checkpoint
from psft_orchestrator.training.dpo import run_dpo
from psft_orchestrator.training.grpo import run_grpo
from psft_orchestrator.training.loop import train
from psft_orchestrator.training.optim import build_optimizer, build_scheduler

from .jobs import make_job, read_metrics


def _setup(model_dir: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = DPOConfig(lr=1e-3, warmup_ratio=0.1)
    opt = build_optimizer(model, cfg)
    return model, opt, build_scheduler(opt, cfg, total_steps=10)


def _save(ckpt_dir: Path, step: int, model, opt, sched, metrics: Path) -> Path:
    state = checkpoint.trainer_state("dpo", step, 10, opt, sched, note=f"at {step}")
    return checkpoint.save(ckpt_dir, step, model, None, state, [metrics])


def _rows(path: Path, steps) -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in steps))


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_save_then_resume_round_trip(tmp_path: Path, micro_model: Path):
    model, opt, sched = _setup(micro_model)
    for _ in range(3):  # three real optimizer steps, so Adam has state
        model(
            input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])
        ).loss.backward()
        opt.step(), sched.step(), opt.zero_grad()
    ckpt_dir, metrics = tmp_path / "ckpt", tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        _rows(metrics, range(1, step + 1))
        _save(ckpt_dir, step, model, opt, sched, metrics)
    rng = torch.get_rng_state()
    # the newest and one fallback are kept
    assert sorted(p.name for p in ckpt_dir.glob("step_*")) == ["step_00000002", "step_00000003"]

    _rows(metrics, range(1, 6))  # rows logged after the checkpoint, before a crash
    torch.manual_seed(123)  # disturb the RNG: resume must restore it
    found = checkpoint.latest(ckpt_dir, "dpo", 10)
    assert found.step == 3 and found.extra == {"note": "at 3"}
    _, opt2, sched2 = _setup(found.model_dir)
    found.restore(opt2, sched2)
    found.restore_metrics([metrics])
    assert sched2.get_last_lr() == sched.get_last_lr()
    exp_avg = [s["exp_avg"] for s in opt.state_dict()["state"].values()]
    assert all(
        torch.equal(a, b["exp_avg"])
        for a, b in zip(exp_avg, opt2.state_dict()["state"].values(), strict=True)
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert _steps(metrics) == [1, 2, 3]

    with pytest.raises(ValueError, match="different run"):
        checkpoint.latest(ckpt_dir, "grpo", 10)
    assert checkpoint.latest(tmp_path / "none", "dpo", 10) is None


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: _truncate(c / "model" / "model.safetensors"),
        lambda c: _truncate(c / checkpoint.STATE_FILE),
        lambda c: _flip_a_byte(c / "model" / "model.safetensors"),
        lambda c: (c / checkpoint.MARKER).unlink(),  # killed before the marker: not complete
        lambda c: (c / checkpoint.METRICS_DIR / "metrics.jsonl").unlink(),
    ],
    ids=["truncated-weights", "truncated-state", "flipped-byte", "no-marker", "missing-file"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    damage, tmp_path: Path, micro_model: Path, caplog
):
    model, opt, sched = _setup(micro_model)
    ckpt_dir, metrics = tmp_path / "ckpt", tmp_path / "metrics.jsonl"
    for step in (2, 4):
        _rows(metrics, range(1, step + 1))
        _save(ckpt_dir, step, model, opt, sched, metrics)
    damage(ckpt_dir / "step_00000004")
    with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
        found = checkpoint.latest(ckpt_dir, "dpo", 10)
    assert found.step == 2
    assert "step_00000004" in caplog.text and "falling back" in caplog.text
    # the run layer's view: the metrics of the checkpoint that will be resumed
    node = tmp_path / "node"
    assert checkpoint.restore_metrics(ckpt_dir, node) == 2
    assert _steps(node / "metrics.jsonl") == [1, 2]
    # the next save at a step below the broken one removes it (it is stale)
    _save(ckpt_dir, 3, model, opt, sched, metrics)
    assert sorted(p.name for p in ckpt_dir.glob("step_*")) == ["step_00000002", "step_00000003"]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sft_resumes_bit_identically_from_the_fallback(micro_model, reverse_data, tmp_path, caplog):
    cfg = SFTConfig(lr=3e-3, seed=7, train_batch_size=8, micro_batch_size=4, max_steps=6,
                    save_every=2)  # fmt: skip

    def run(root: Path, **kw):
        return train("sft", cfg, micro_model, reverse_data, root / "out", root / "ckpt",
                     root / "metrics.jsonl", **kw)  # fmt: skip

    run(tmp_path / "a")
    run(tmp_path / "b", stop_after=4)
    _truncate(tmp_path / "b" / "ckpt" / "step_00000004" / "model" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
        summary = run(tmp_path / "b")
    assert summary["resumed_from"] == "step_00000002" and "falling back" in caplog.text
    _same_weights(tmp_path / "a" / "out", tmp_path / "b" / "out")
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert _steps(tmp_path / "b" / "metrics.jsonl") == list(range(1, 7))
    drop = ("tokens_per_s",)  # wall-clock
    strip = [{k: v for k, v in json.loads(r).items() if k not in drop} for r in rows_a + rows_b]
    assert strip[:6] == strip[6:]


def _resume_after_losing_the_last_checkpoint(trainer, root: Path, **job_args):
    """An uninterrupted run vs one killed after its step-2 checkpoint (the later ones lost, the
    node directory of the killed attempt gone): same weights and same metric rows."""
    full = make_job(root / "full", **job_args)
    trainer(full)
    killed = make_job(root / "killed", **job_args)
    trainer(killed)
    for later in sorted(Path(killed.checkpoint_dir).glob("step_*"))[1:]:
        shutil.rmtree(later)
    shutil.rmtree(killed.node_dir)
    resumed = make_job(root / "killed", **job_args)
    trainer(resumed)
    _same_weights(full.output_path(), resumed.output_path())
    assert read_metrics(full) == read_metrics(resumed)
    return read_metrics(resumed)


def test_dpo_resumes_bit_identically(micro_model, pairs, tmp_path):
    rows = _resume_after_losing_the_last_checkpoint(
        run_dpo, tmp_path, kind="dpo", backend="native", model=micro_model, data=pairs,
        data_type="preference", train_batch_size=4, micro_batch_size=2, max_steps=4, lr=1e-3,
        save_every=2, seed=3,
    )  # fmt: skip
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_grpo_resumes_bit_identically(micro_model, tmp_path):
    from psft_orchestrator.data.toy.tasks import write_toy_data

    prompts = write_toy_data("prompts", 4, 0, tmp_path / "prompts.jsonl", level=1)
    rows = _resume_after_losing_the_last_checkpoint(
        run_grpo, tmp_path, kind="grpo", backend="native", model=micro_model, data=prompts,
        data_type="prompts", train_batch_size=2, mini_batch_size=1, micro_batch_size=4,
        rollout_n=4, lr=1e-3, max_prompt_length=128, max_response_length=8, total_steps=4,
        save_every=2, seed=1, dynamic_sampling=False,
    )  # fmt: skip
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_a_resume_with_no_step_left_keeps_every_metric_row(micro_model, reverse_data, tmp_path):
    """Killed after the last step's checkpoint, before the node was committed: the next attempt
    (a fresh node directory) has nothing to train and still ends with all rows (issue 16)."""
    cfg = SFTConfig(lr=3e-3, seed=7, train_batch_size=8, micro_batch_size=8, max_steps=3)
    ckpt = tmp_path / "ckpt"
    first = train("sft", cfg, micro_model, reverse_data, tmp_path / "a" / "out", ckpt,
                  tmp_path / "a" / "metrics.jsonl")  # fmt: skip
    again = train("sft", cfg, micro_model, reverse_data, tmp_path / "b" / "out", ckpt,
                  tmp_path / "b" / "metrics.jsonl")  # fmt: skip
    assert again["resumed_from"] == "step_00000003" and again["final_loss"] == first["final_loss"]
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == a and _steps(
        tmp_path / "a" / "metrics.jsonl"
    ) == [1, 2, 3]
    _same_weights(tmp_path / "a" / "out", tmp_path / "b" / "out")
