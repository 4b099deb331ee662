"""GRPO with the DAPO techniques, native: pure functions for each piece, then the RL loop.

Per RL step (`run_grpo`), following methods.md ("GRPO with DAPO techniques") and verl's recipe:

  1. take `train_batch_size` prompts (epoch-wise shuffled from the seed) and sample `rollout_n`
     completions each with the current policy (temperature / top_p, ≤ max_response_length tokens);
  2. reward = 1 if Math-Verify accepts the last \\boxed{} (+ `format_reward` for any \\boxed{}), plus
     DAPO's overlong shaping (`overlong_penalty`);
  3. group-normalised advantages (`group_advantages`); dynamic sampling drops the groups whose
     accuracies are all equal (`dynamic_sampling_mask`: they carry no gradient);
  4. θ_old log-probs of the kept sequences, once, without grad; then one AdamW step per mini-batch
     of `mini_batch_size` prompts (their whole groups), micro-batches of `micro_batch_size`
     sequences with exact accumulation, loss = `grpo_loss` (clip-higher PPO surrogate, token-mean,
     optional k3 KL to the initial model), grad-norm clip.

Log-probs and entropies use logits / temperature, as verl does: the policy being optimised is the
sampling distribution. Not implemented (noted for the lead): DAPO's re-sampling of extra prompt
batches to refill the dropped groups (we train on the kept ones only and log `kept_group_frac`),
and verl's dual-clip (`clip_ratio_c`) for negative advantages.
"""

from __future__ import annotations

import math
import random
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from psft_orchestrator.configs.training import GRPOConfig
from psft_orchestrator.contract import Job, config_for
from psft_orchestrator.training import losses as L
from psft_orchestrator.training.data import Example, collate
from psft_orchestrator.training.recipe import Runtime, Trainer, load_tokenizer

# ----------------------------------------------------------------------------- pure functions


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """GRPO's outcome advantage, per sample; `rewards` is `[N·G]` with each group contiguous.

        A_i = (r_i − mean_group(r)) / (std_group(r) + eps)

    std is the unbiased (n−1) one, as in verl's `compute_grpo_outcome_advantage`; a group of one
    sample gets mean 0 and std 1 (A = r), also as verl. A group with equal rewards gets A = 0.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.reshape(-1, group_size).to(torch.float32)
    if group_size == 1:
        return r.reshape(-1)
    mean = r.mean(-1, keepdim=True)
    std = r.std(-1, keepdim=True)
    return ((r - mean) / (std + eps)).reshape(-1)


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int, penalty: float) -> Tensor:
    """DAPO's soft overlong punishment, added to the reward (values in [−penalty, 0]).

        expected = max_len − buffer
        shaping  = min(−(len − expected) / buffer · penalty, 0)

    0 up to `expected` tokens, then linear down to −penalty at `max_len` (verl's DAPO reward
    manager). `buffer = 0` turns it off.
    """
    lengths = lengths.to(torch.float32)
    if buffer <= 0:
        return torch.zeros_like(lengths)
    exceed = lengths - (max_len - buffer)
    return (-exceed / buffer * penalty).clamp(max=0.0)


def dynamic_sampling_mask(rewards: Tensor, group_size: int) -> Tensor:
    """DAPO's dynamic sampling: `[N]` bool per group, True = keep (its rewards are not all equal).

    A group whose rewards are all equal has all advantages 0 and contributes no gradient, only
    noise in the token-mean denominator. DAPO filters on the accuracy (verl's default
    `filter_groups.metric: acc`), so pass the 0/1 correctness rather than the shaped reward.
    """
    r = rewards.reshape(-1, group_size)
    return (r != r[:, :1]).any(-1)


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    agg: str = "token-mean",
    denom: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate with asymmetric clipping ("clip-higher"); `[B, T]` tensors,
    `advantages` `[B, T]` or `[B]` (one per sequence, broadcast over its tokens).

        r_t = exp(clamp(logp_t − old_t, −20, 20))
        L_t = max(−A_t r_t, −A_t clamp(r_t, 1 − ε_low, 1 + ε_high))
        L   = agg(L_t over the mask)

    For A > 0 the upper clip binds (r > 1 + ε_high: no gradient), for A < 0 the lower one
    (r < 1 − ε_low). `losses.psft_loss` is the special case A ≡ 1 (tested). Metrics (token means):
    clipfrac (either clip binds), clipfrac_lower (the lower one), ppo_kl = mean(old − logp).
    """
    old_logp = old_logp.detach()
    adv = advantages.detach().to(logp.dtype)
    if adv.dim() == 1:
        adv = adv[:, None]
    ratio = torch.exp((logp - old_logp).clamp(-L.LOG_RATIO_CLAMP, L.LOG_RATIO_CLAMP))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = L.agg_loss(torch.maximum(unclipped, clipped), mask, agg, denom)
    with torch.no_grad():
        binds = clipped > unclipped
        metrics = {
            "clipfrac": L.masked_mean(binds.to(logp.dtype), mask),
            "clipfrac_lower": L.masked_mean(
                (binds & (ratio < 1.0 - clip_low)).to(logp.dtype), mask
            ),
            "ppo_kl": L.masked_mean(old_logp - logp.detach(), mask),
        }
    return loss, metrics


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    agg: str = "token-mean",
    *,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    denom: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRPO/DAPO actor loss: `ppo_clip_loss` + kl_coef · agg(k3(logp, ref)) when kl_coef > 0.

    k3 = exp(ref − logp) − (ref − logp) − 1 (verl's low_var_kl, `losses.kl_penalty`); the paper's
    setting is kl_coef = 0 (no reference model needed). Metrics add `kl` when it is used.
    """
    loss, metrics = ppo_clip_loss(logp, old_logp, advantages, mask, clip_low, clip_high, agg, denom)
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp")
        kl = L.kl_penalty(logp, ref_logp, "k3")
        loss = loss + kl_coef * L.agg_loss(kl, mask, agg, denom)
        metrics["kl"] = L.masked_mean(kl.detach(), mask)
    return loss, metrics


# ----------------------------------------------------------------------------- data and rewards


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """RL rows `{"prompt": [messages], "ground_truth": str, "data_source": str}` (any layout that
    `data.formats` converts), in file order."""
    from psft_orchestrator.data.formats import convert, iter_rows

    return [
        row
        if {"prompt", "ground_truth"} <= row.keys() and isinstance(row["prompt"], list)
        else convert(row, "auto", "prompts")
        for row in iter_rows(path)
    ]


def score(completion: str, ground_truth: str, format_reward: float = 0.0) -> tuple[float, bool]:
    """(reward, correct): 1 when Math-Verify accepts the last \\boxed{} (`data.answers.verify`),
    plus `format_reward` when the completion has a \\boxed{} at all."""
    from psft_orchestrator.data.answers import extract_boxed, verify

    correct = verify(completion, ground_truth)
    bonus = format_reward if format_reward and extract_boxed(completion) is not None else 0.0
    return float(correct) + bonus, correct


# ----------------------------------------------------------------------------- rollouts


@torch.no_grad()
def rollout(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    n: int,
    cfg: GRPOConfig,
    seed: int,
    batch_size: int = 128,
) -> list[tuple[list[int], bool]]:
    """`n` sampled responses per prompt (contiguous groups): (token ids up to and including the
    stop token, truncated?). Left-padded batched HF generate under a forked, seeded RNG."""
    from psft_orchestrator.evals.generate import stop_token_ids

    device = next(model.parameters()).device
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    seqs = [ids for ids in prompt_ids for _ in range(n)]
    out: list[tuple[list[int], bool]] = []
    was_training = model.training
    model.eval()
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            for b, start in enumerate(range(0, len(seqs), batch_size)):
                chunk = seqs[start : start + batch_size]
                width = max(map(len, chunk))
                ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in chunk], device=device)
                attn = torch.tensor(
                    [[0] * (width - len(s)) + [1] * len(s) for s in chunk], device=device
                )
                torch.manual_seed(seed + b)
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=attn,
                    do_sample=True,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    top_k=0,
                    max_new_tokens=cfg.max_response_length,
                    eos_token_id=stops,
                    pad_token_id=pad_id,
                    use_cache=True,
                )[:, width:].tolist()
                for row in gen:
                    end = next((i for i, t in enumerate(row) if t in stops), None)
                    out.append((row[: end + 1], False) if end is not None else (row, True))
    finally:
        model.train(was_training)
    return out


# ----------------------------------------------------------------------------- the loop

MiniBatch = tuple[list[tuple[dict[str, Tensor], Tensor]], list[Tensor], list[Tensor] | None]


def run_grpo(job: Job) -> dict[str, Any]:
    """GRPO/DAPO on `job.input("model")` with the RL prompts of `job.input("data")`; module doc."""
    recipe = GRPORecipe(job)
    return recipe.train(job.output_path())


class GRPORecipe:
    """One GRPO run: prompts, the shared trainer skeleton, then `train()`, one RL step at a time."""

    def __init__(self, job: Job) -> None:
        from psft_orchestrator.evals.generate import render

        self.cfg = cfg = config_for(job, GRPOConfig)
        model_path = Path(job.input("model").path)
        self.rt = Runtime.from_config(cfg)

        # ---- prompts (too-long ones are dropped, as verl's filter_overlong_prompts does)
        self.tokenizer, self.pad_id = load_tokenizer(model_path)
        self.rows, self.prompt_ids = [], []
        all_rows = read_prompts(job.input("data").path)
        for row in all_rows:
            text = render(self.tokenizer, row["prompt"])
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= cfg.max_prompt_length:
                self.rows.append(row)
                self.prompt_ids.append(ids)
        self.n_dropped = len(all_rows) - len(self.rows)
        if len(self.rows) < cfg.train_batch_size:
            raise ValueError(
                f"{len(self.rows)} usable prompts (of {len(all_rows)}) cannot fill a batch of "
                f"{cfg.train_batch_size}"
            )
        self.batches_per_epoch = len(self.rows) // cfg.train_batch_size
        total_steps = cfg.max_steps or cfg.total_steps
        self.mini_prompts = cfg.mini_batch_size or cfg.train_batch_size
        updates_per_step = cfg.train_batch_size // self.mini_prompts

        # ---- policy, reference (for the KL term only), optimizer, schedule, resume. The schedule
        # counts nominal optimizer steps; dynamic sampling may skip some (it is then stretched).
        self.run = Trainer("grpo", cfg, self.rt, model_path, self.tokenizer,
                           Path(job.checkpoint_dir), [job.out / "metrics.jsonl"], total_steps,
                           reference=cfg.kl_coef > 0,
                           scheduler_steps=total_steps * updates_per_step)  # fmt: skip
        self.order: dict[int, list[int]] = {}

    def train(self, out_dir: Path) -> dict[str, Any]:
        run, G = self.run, self.cfg.rollout_n
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        with run.metrics_writer() as writer:
            while run.step < run.total_steps:
                batch = self.prompt_batch(run.step)
                # 1. rollouts, seeded by (seed, step): a resumed run samples the same
                prompts = [self.prompt_ids[i] for i in batch]
                seed = self.cfg.seed * 100_003 + run.step * 1009
                samples = rollout(run.model, self.tokenizer, prompts, G, self.cfg, seed=seed)
                # 2-3. rewards, advantages, dynamic sampling
                row, adv, kept_groups = self.score(batch, samples)
                # 4. θ_old (and reference) log-probs, before any update of this step
                minis = self.old_policy_pass(batch, samples, adv, kept_groups)
                # 5. one optimizer step per mini-batch of prompts
                row.update(self.update(minis))
                run.step += 1
                last = {k: float(v) for k, v in row.items()}
                first = first or last
                run.log(writer, last)
                run.maybe_save()
        run.finish(out_dir)
        return {
            "steps": run.step,
            "first_accuracy": first.get("accuracy"),
            "final_accuracy": last.get("accuracy"),
            "final_reward_mean": last.get("reward_mean"),
            "final_entropy": last.get("entropy"),
            "prompts": len(self.rows),
            "prompts_dropped_too_long": self.n_dropped,
            "epochs": math.ceil(run.total_steps / self.batches_per_epoch),
        }

    def prompt_batch(self, step: int) -> list[int]:
        """Prompt indices of RL step `step` (epoch-wise shuffled from the seed)."""
        size = self.cfg.train_batch_size
        epoch, b = divmod(step, self.batches_per_epoch)
        if epoch not in self.order:
            idx = list(range(len(self.rows)))
            random.Random(f"{self.cfg.seed}/{epoch}").shuffle(idx)
            self.order = {epoch: idx}
        return self.order[epoch][b * size : (b + 1) * size]

    def score(
        self, batch: list[int], samples: list[tuple[list[int], bool]]
    ) -> tuple[dict[str, Any], Tensor, list[int]]:
        """Rewards (+ overlong shaping), group advantages, and the groups dynamic sampling keeps."""
        cfg, G = self.cfg, self.cfg.rollout_n
        texts = self.tokenizer.batch_decode([ids for ids, _ in samples], skip_special_tokens=True)
        scored = [
            score(t, str(self.rows[batch[k // G]]["ground_truth"]), cfg.format_reward)
            for k, t in enumerate(texts)
        ]
        acc = torch.tensor([float(c) for _, c in scored])
        lengths = torch.tensor([len(ids) for ids, _ in samples], dtype=torch.float32)
        rewards = torch.tensor([r for r, _ in scored]) + overlong_penalty(
            lengths, cfg.max_response_length, cfg.overlong_buffer, cfg.overlong_penalty
        )
        adv = group_advantages(rewards, G)
        keep = (
            dynamic_sampling_mask(acc, G)
            if cfg.dynamic_sampling
            else torch.ones(len(batch), dtype=torch.bool)
        )
        row = {
            "reward_mean": rewards.mean(),
            "accuracy": acc.mean(),
            "response_length": lengths.mean(),
            "truncated_frac": sum(t for _, t in samples) / len(samples),
            "kept_group_frac": keep.float().mean(),
        }
        return row, adv, keep.nonzero().flatten().tolist()

    def old_policy_pass(
        self, batch, samples, adv: Tensor, kept_groups: list[int]
    ) -> list[MiniBatch]:
        """The kept sequences as mini-batches of (collated micro-batch, advantages), with their
        θ_old log-probs (and reference ones for the KL term), computed once without grad."""
        cfg, G, run = self.cfg, self.cfg.rollout_n, self.run
        minis = []
        for start in range(0, len(kept_groups), self.mini_prompts):
            groups = kept_groups[start : start + self.mini_prompts]
            seq_idx = [g * G + j for g in groups for j in range(G)]
            examples = []
            for k in seq_idx:
                prompt, response = self.prompt_ids[batch[k // G]], samples[k][0]
                examples.append(Example(prompt + response, [0] * len(prompt) + [1] * len(response)))
            micros = [
                (
                    collate(examples[i : i + cfg.micro_batch_size], self.pad_id),
                    adv[seq_idx[i : i + cfg.micro_batch_size]],
                )
                for i in range(0, len(examples), cfg.micro_batch_size)
            ]
            with torch.no_grad():
                old = [self.token_pass(run.model, mb)[0] for mb, _ in micros]
                ref = None
                if run.ref_model is not None:
                    ref = [self.token_pass(run.ref_model, mb)[0] for mb, _ in micros]
            minis.append((micros, old, ref))
        return minis

    def update(self, minis: list[MiniBatch]) -> dict[str, float]:
        """One optimizer step per mini-batch; token-weighted metrics, averaged over the updates."""
        cfg, run, dev = self.cfg, self.run, self.rt.device
        stats: dict[str, list[float]] = {}
        for micros, old, ref in minis:
            masks = [mb["loss_mask"].to(dev) for mb, _ in micros]
            denom = L.agg_denom(masks, cfg.loss_agg_mode)

            loss_of = partial(self.micro_loss, old, ref, masks, denom, stats)
            loss, grad_norm, lr = run.optimizer_step(micros, loss_of, "GRPO loss")
            stats.setdefault("lr", []).append(lr)
            stats.setdefault("loss", []).append(loss)
            stats.setdefault("grad_norm", []).append(grad_norm)
        updates = len(stats.get("loss", []))
        out = {k: sum(v) / updates for k, v in stats.items()}  # token-weighted sums → mean
        out["updates"] = updates
        return out

    def micro_loss(self, old, ref, masks, denom, stats, i: int, micro) -> Tensor:
        """The GRPO loss of micro-batch i of a mini-batch; its metrics go to `stats`, weighted
        by the micro-batch's share of the mini-batch's response tokens."""
        cfg, dev = self.cfg, self.rt.device
        logp, logits = self.token_pass(self.run.model, micro[0])
        loss, extra = grpo_loss(
            logp, old[i], micro[1].to(dev), masks[i], cfg.clip_low, cfg.clip_high,
            cfg.loss_agg_mode, ref_logp=ref[i] if ref is not None else None,
            kl_coef=cfg.kl_coef, denom=denom,
        )  # fmt: skip
        with torch.no_grad():
            extra["entropy"] = L.masked_mean(L.token_entropy(logits.detach()), masks[i])
        w = float(masks[i].sum()) / float(sum(m.sum() for m in masks))
        for k, v in extra.items():
            stats.setdefault(k, []).append(float(v) * w)
        return loss

    def token_pass(self, m: torch.nn.Module, micro: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(logp, logits/T) of a collated micro-batch."""
        dev = self.rt.device
        with self.rt.autocast():
            logits = m(
                input_ids=micro["input_ids"].to(dev),
                attention_mask=micro["attention_mask"].to(dev),
            ).logits
        logits = logits[:, :-1].float() / self.cfg.temperature
        return L.token_logprobs(logits, micro["labels"].to(dev)), logits
