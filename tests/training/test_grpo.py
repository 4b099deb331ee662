"""GRPO/DAPO: the pure pieces on hand-built groups, the clipped surrogate against psft_loss and the
methods.md worked example, and a short seeded RL run on the toy world that raises the reward."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from psft_orchestrator.training.grpo import (
    dynamic_sampling_mask,
    group_advantages,
    grpo_loss,
    overlong_penalty,
    ppo_clip_loss,
    run_grpo,
)
from psft_orchestrator.training.losses import kl_penalty, psft_loss

from .jobs import make_job, read_metrics


def test_group_advantages_normalise_within_each_group():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.25]
    adv = group_advantages(torch.tensor(rewards), group_size=4, eps=1e-6)
    for g in range(3):
        r = rewards[4 * g : 4 * g + 4]
        mean, std = statistics.mean(r), statistics.stdev(r)  # unbiased, as verl
        expected = [(x - mean) / (std + 1e-6) for x in r] if std > 0 else [0.0] * 4
        assert adv[4 * g : 4 * g + 4].tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[4:8].abs().max() == 0  # all-equal group: no signal
    assert group_advantages(torch.tensor([0.5, 1.0]), 1).tolist() == [
        0.5,
        1.0,
    ]  # verl: mean 0, std 1
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 4)


def test_overlong_penalty_is_linear_over_the_buffer():
    lengths = torch.tensor([10, 80, 84, 88, 96, 100])
    got = overlong_penalty(lengths, max_len=96, buffer=16, penalty=1.0).tolist()
    # expected length 96 − 16 = 80: no penalty up to it, then −(len − 80)/16
    assert got == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.25])
    assert overlong_penalty(lengths, 96, 16, 0.5)[4].item() == pytest.approx(-0.5)
    assert overlong_penalty(lengths, 96, 0, 1.0).abs().sum() == 0


def test_dynamic_sampling_keeps_groups_with_different_rewards():
    acc = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 0], dtype=torch.float32)
    assert dynamic_sampling_mask(acc, 4).tolist() == [True, False, False, True]


def test_clipped_surrogate_with_advantage_one_is_psft():
    """methods.md's worked example (ε_high 0.28, token-mean): the general loss with A ≡ 1 reproduces
    psft_loss, its value, clipfrac and gradient."""
    old = torch.tensor([[-1, -2, -0.5, -3], [-0.2, -1.5, -4, -9.9]], dtype=torch.float64)
    logp = torch.tensor(
        [[-0.9, -1.5, -0.9, -3], [-0.1, -1.9, -3, 0]], dtype=torch.float64, requires_grad=True
    )
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    loss, m = ppo_clip_loss(logp, old, torch.ones(2, dtype=torch.float64), mask, 0.2, 0.28)
    (grad,) = torch.autograd.grad(loss, logp)
    ref_loss, _ = psft_loss(logp, old, mask, 0.2, 0.28)
    (ref_grad,) = torch.autograd.grad(ref_loss, logp)
    assert loss.item() == pytest.approx(ref_loss.item()) == pytest.approx(-1.0158546, abs=1e-7)
    assert m["clipfrac"].item() == pytest.approx(2 / 7) and m["ppo_kl"].item() == pytest.approx(
        -0.1285714, abs=1e-7
    )
    assert torch.allclose(grad, ref_grad)


def test_negative_advantage_clips_below():
    """A < 0: tokens pushed below 1 − ε_low get no gradient; above it the surrogate is −A·r."""
    old = torch.zeros(1, 3, dtype=torch.float64)
    logp = torch.log(torch.tensor([[0.7, 1.0, 1.5]], dtype=torch.float64)).requires_grad_()
    mask = torch.ones(1, 3)
    loss, m = ppo_clip_loss(logp, old, torch.tensor([-2.0], dtype=torch.float64), mask, 0.2, 0.28)
    (grad,) = torch.autograd.grad(loss, logp)
    # L_t = max(2r, 2·clamp(r, 0.8, 1.28)) = [1.6, 2.0, 3.0] → mean 6.6/3; dL/dlogp = 2r/3 where unclipped
    assert loss.item() == pytest.approx(6.6 / 3)
    assert grad.tolist()[0] == pytest.approx([0.0, 2 / 3, 1.0])
    assert m["clipfrac"].item() == pytest.approx(1 / 3) == pytest.approx(m["clipfrac_lower"].item())


def test_grpo_loss_adds_k3_kl_only_when_asked():
    g = torch.Generator().manual_seed(1)
    logp, old, ref = (-torch.rand(2, 5, generator=g, dtype=torch.float64) for _ in range(3))
    adv, mask = (
        torch.tensor([0.7, -1.2], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
    )
    base, m0 = grpo_loss(logp, old, adv, mask)
    assert "kl" not in m0 and base.item() == pytest.approx(
        ppo_clip_loss(logp, old, adv, mask)[0].item()
    )
    with_kl, m1 = grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.1)
    k3 = kl_penalty(logp, ref, "k3")
    assert with_kl.item() == pytest.approx(base.item() + 0.1 * (k3 * mask).sum().item() / 8)
    assert m1["kl"].item() >= 0


# ----------------------------------------------------------------------------- the RL loop

PROMPTS = 4


@pytest.fixture(scope="module")
def coin_flip_model(tmp_path_factory):
    """The micro toy model taught, on 4 level-1 toy math prompts, to answer either
    "The answer is \\boxed{N}." (reward 1) or "The answer is N." (no box: reward 0) with equal
    probability, so GRPO starts near 50 % and has something to learn (a few seconds of training)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psft_orchestrator.data.toy.model import make_tiny_model
    from psft_orchestrator.data.toy.tasks import write_toy_data

    root = tmp_path_factory.mktemp("grpo")
    prompts = write_toy_data("prompts", PROMPTS, 0, root / "prompts.jsonl", level=1)
    model_dir = make_tiny_model(root / "model", size="micro", seed=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids, labels = [], []
    for row in map(json.loads, prompts.read_text().splitlines()):
        prefix = tok(
            tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        for response in (
            f"The answer is \\boxed{{{row['ground_truth']}}}.",
            f"The answer is {row['ground_truth']}.",
        ):
            target = tok(response + "<|im_end|>", add_special_tokens=False)["input_ids"]
            ids.append(prefix + target)
            labels.append([-100] * len(prefix) + target)
    width = max(map(len, ids))
    x = torch.tensor([s + [0] * (width - len(s)) for s in ids])
    y = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model(input_ids=x, attention_mask=attn, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir)
    return model_dir, prompts


@pytest.mark.slow
def test_grpo_raises_the_reward(coin_flip_model, tmp_path):
    """Seeded 10-step run (4 prompts × 8 samples, 2 mini-batches per step): the mean accuracy of
    the last three steps beats that of the first three by more than 0.1. (One step is 32
    samples, so single steps are too noisy to compare: ±0.09 at p = 0.5.)"""
    model_dir, prompts = coin_flip_model
    job = make_job(
        tmp_path,
        "grpo",
        "native",
        model_dir,
        prompts,
        "prompts",
        train_batch_size=PROMPTS,
        mini_batch_size=PROMPTS // 2,
        micro_batch_size=16,
        rollout_n=8,
        lr=1e-3,
        max_prompt_length=128,
        max_response_length=16,
        overlong_buffer=4,
        total_steps=10,
        seed=1,
    )
    summary = run_grpo(job)
    rows = read_metrics(job)
    assert [r["step"] for r in rows] == list(range(1, 11)) and summary["steps"] == 10
    keys = {
        "reward_mean",
        "accuracy",
        "entropy",
        "clipfrac",
        "response_length",
        "kept_group_frac",
        "loss",
        "grad_norm",
        "lr",
    }
    assert all(keys <= r.keys() for r in rows if r["updates"] > 0)
    assert all(0 <= r["kept_group_frac"] <= 1 and math.isfinite(r["reward_mean"]) for r in rows)
    assert rows[0]["ppo_kl"] != 0  # the second mini-batch is off-policy: θ_old is per rollout batch
    first = sum(r["accuracy"] for r in rows[:3]) / 3
    last = sum(r["accuracy"] for r in rows[-3:]) / 3
    assert last > first + 0.1, [r["accuracy"] for r in rows]
    assert (job.output_path() / "model.safetensors").exists() and (
        job.output_path() / "tokenizer.json"
    ).exists()
