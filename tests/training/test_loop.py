"""The trainer end to end on the toy micro model (random Qwen2): learning, metrics, the PSFT/SFT
identities at the level of whole optimizer steps, checkpoint/resume, non-finite detection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from psft_orchestrator.configs.training import (
    DFTConfig,
    IWSFTConfig,
    KLConfig,
    PSFTConfig,
    SFTConfig,
)
from psft_orchestrator.training import checkpoint
from psft_orchestrator.training.loop import train
from psft_orchestrator.training.recipe import NonFiniteLossError

BASE = dict(lr=3e-3, lr_scheduler="constant", seed=7)


def run(kind, cfg, model, data, root: Path, **kw):
    summary = train(
        kind, cfg, model, data, root / "out", root / "ckpt", root / "metrics.jsonl", **kw
    )
    return summary, read_rows(root / "metrics.jsonl")


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = checkpoint.latest(checkpoint_dir)
    return found.path if found else None


def read_rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "out" / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_sft_learns_and_logs_every_step(micro_model, reverse_data, tmp_path):
    cfg = SFTConfig(**BASE, train_batch_size=8, micro_batch_size=4, epochs=3)
    summary, rows = run("sft", cfg, micro_model, reverse_data, tmp_path)
    assert summary["steps"] == 18 == len(rows)  # 48 rows / 8 = 6 train batches × 3 epochs
    assert [r["step"] for r in rows] == list(range(1, 19))
    for r in rows:
        assert {"epoch", "loss", "ce", "entropy", "grad_norm", "lr", "tokens_per_s"} <= r.keys()
        assert all(math.isfinite(r[k]) for k in ("loss", "ce", "entropy", "grad_norm"))
        assert r["loss"] == pytest.approx(r["ce"], rel=1e-5)  # plain SFT: the loss is the CE
    assert rows[-1]["epoch"] == pytest.approx(3.0)
    assert sum(r["loss"] for r in rows[-3:]) / 3 < rows[0]["loss"] - 1.0
    assert summary["final_loss"] == rows[-1]["loss"] and summary["tokens_per_s"] > 0
    assert (tmp_path / "out" / "tokenizer.json").exists() and (
        tmp_path / "out" / "config.json"
    ).exists()
    assert latest_checkpoint(tmp_path / "ckpt").name == "step_00000018"  # final checkpoint


def test_psft_with_one_mini_batch_per_train_batch_is_sft_exactly(
    micro_model, reverse_data, tmp_path
):
    common = dict(**BASE, train_batch_size=8, micro_batch_size=4, max_steps=3)
    run("sft", SFTConfig(**common), micro_model, reverse_data, tmp_path / "sft")
    _, rows = run(
        "psft",
        PSFTConfig(**common, mini_batch_size=8),
        micro_model,
        reverse_data,
        tmp_path / "psft",
    )
    assert_same_weights(tmp_path / "sft", tmp_path / "psft")
    assert all(
        r["clipfrac"] == 0 and r["ppo_kl"] == 0 and r["loss"] == pytest.approx(-1.0) for r in rows
    )


def test_first_mini_batch_step_is_an_sft_step(micro_model, reverse_data, tmp_path):
    common = dict(**BASE, train_batch_size=8, mini_batch_size=4, micro_batch_size=2, max_steps=1)
    run("sft", SFTConfig(**common), micro_model, reverse_data, tmp_path / "sft")
    run("psft", PSFTConfig(**common), micro_model, reverse_data, tmp_path / "psft")
    assert_same_weights(tmp_path / "sft", tmp_path / "psft")


def test_psft_resume_reproduces_the_uninterrupted_run(micro_model, reverse_data, tmp_path):
    # 3 mini-batches per train batch, micro-batches of 1 (accumulation), SFT warm-up ending mid-batch,
    # checkpoints mid-batch (the θ_old cache must travel with them), PSFT-Ent on.
    cfg = PSFTConfig(
        **BASE,
        train_batch_size=6,
        mini_batch_size=2,
        micro_batch_size=1,
        max_steps=8,
        save_every=3,
        warmup_sft_steps=2,
        clipped_tokens_every=2,
        entropy_top_frac=0.6,
        clip_high=0.05,
    )
    _, rows_a = run("psft", cfg, micro_model, reverse_data, tmp_path / "a")
    first, _ = run("psft", cfg, micro_model, reverse_data, tmp_path / "b", stop_after=5)
    assert first["stopped"] and not (tmp_path / "b" / "out").exists()
    assert latest_checkpoint(tmp_path / "b" / "ckpt").name == "step_00000005"
    # a row logged after the checkpoint, before a crash: resume must drop it, not duplicate step 6
    with (tmp_path / "b" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 6, "loss": 123.0}) + "\n")
    second, rows_b = run("psft", cfg, micro_model, reverse_data, tmp_path / "b")
    assert second["resumed_from"] == "step_00000005" and second["steps"] == 8

    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert [r["step"] for r in rows_b] == list(range(1, 9))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for k in ("loss", "ce", "entropy", "grad_norm", "lr", "clipfrac", "ppo_kl"):
            assert ra.get(k) == rb.get(k), (ra["step"], k)
    clip_a = read_rows(tmp_path / "a" / "clipped_tokens.jsonl")
    assert clip_a == read_rows(tmp_path / "b" / "clipped_tokens.jsonl")

    # warm-up: steps 1-2 are SFT; PSFT starts at step 3 with ratio 1 (θ_old taken there)
    assert [r.get("objective") for r in rows_a[:3]] == ["sft", "sft", None]
    assert "clipfrac" not in rows_a[0] and rows_a[2]["ppo_kl"] == 0 and rows_a[3]["ppo_kl"] == 0
    # steps 5, 6 reuse θ_old from the start of their train batch: the ratio has moved
    assert rows_a[4]["ppo_kl"] != 0 and rows_a[5]["ppo_kl"] != 0
    assert any(r["clipfrac"] > 0 for r in rows_a[2:])
    assert [r["step"] for r in clip_a] == [2, 4, 6, 8] and sum(
        r["clipped_total"] for r in clip_a
    ) > 0
    # PSFT-Ent trains on a subset of the response tokens
    assert all(r["trained_tokens"] < r["response_tokens"] for r in rows_a[4:6])


@pytest.mark.parametrize(
    "kind,cfg,key",
    [
        ("dft", DFTConfig(**BASE, train_batch_size=8, micro_batch_size=4, max_steps=2), None),
        (
            "iwsft",
            IWSFTConfig(**BASE, train_batch_size=8, mini_batch_size=4, max_steps=4),
            "iw_weight",
        ),
        (
            "iwsft",
            IWSFTConfig(**BASE, train_batch_size=8, mini_batch_size=4, max_steps=4, level="token"),
            "iw_weight",
        ),
        (
            "sft",
            SFTConfig(**BASE, train_batch_size=8, mini_batch_size=4, max_steps=4, kl=KLConfig()),
            "kl",
        ),
        (
            "psft",
            PSFTConfig(
                **BASE, train_batch_size=8, mini_batch_size=4, max_steps=4, old_policy="initial"
            ),
            "ppo_kl",
        ),
    ],
    ids=["dft", "iwsft-seq", "iwsft-token", "sft-kl", "psft-initial"],
)
def test_other_objectives_move_away_from_the_reference(
    kind, cfg, key, micro_model, reverse_data, tmp_path
):
    summary, rows = run(kind, cfg, micro_model, reverse_data, tmp_path)
    assert len(rows) == cfg.max_steps and summary["steps"] == cfg.max_steps
    if kind == "dft":
        assert all(r["loss"] < r["ce"] for r in rows)  # p-weighted CE is below the plain CE
        return
    # step 1: the policy is the reference (weight 1, KL 0); after updates it is not
    neutral = 1.0 if key == "iw_weight" else 0.0
    assert rows[0][key] == pytest.approx(neutral, abs=1e-6)
    assert abs(rows[-1][key] - neutral) > 1e-4  # the last step is a second mini-batch, θ_init ≠ θ


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(
    micro_model, reverse_data, tmp_path
):
    cfg = SFTConfig(**BASE, train_batch_size=8, micro_batch_size=8, max_steps=4)
    run("sft", cfg, micro_model, reverse_data, tmp_path, stop_after=2)
    ckpt = latest_checkpoint(tmp_path / "ckpt")
    # corrupt the weights the run resumes from (as a diverged update would): step 3 must fail
    w = load_file(ckpt / "model" / "model.safetensors")
    name = next(k for k in w if "embed_tokens" in k)
    w[name][:] = float("nan")
    save_file(w, ckpt / "model" / "model.safetensors", metadata={"format": "pt"})
    checkpoint.write_marker(ckpt, 2)  # saved as a complete checkpoint: not a torn file
    with pytest.raises(NonFiniteLossError, match="step 3"):
        run("sft", cfg, micro_model, reverse_data, tmp_path)
    assert latest_checkpoint(tmp_path / "ckpt") == ckpt and not (tmp_path / "out").exists()
