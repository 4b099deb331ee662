"""Direct Preference Optimization, native: the sigmoid loss as a pure function, and its trainer.

The loss and its metrics match TRL's `DPOTrainer.dpo_loss` (sigmoid, no label smoothing), which is
what LLaMA-Factory's `CustomDPOTrainer` calls; sequence log-probs are SUMS over response tokens in
both (TRL `concatenated_forward`: `per_token_logps[:, 1:].sum(-1)`; LLaMA-Factory
`get_batch_logps`: the sum, divided by the length only for ipo/orpo/simpo).

Trainer (`run_dpo`): the policy starts from the input model and the frozen reference IS the input
model. Pairs are used in file order (no shuffling), `train_batch_size` pairs per optimizer step,
`micro_batch_size` pairs per forward pass (chosen and rejected concatenated into one batch, as TRL
does), each micro-batch loss divided by the step's pair count so accumulation is exact. One
metrics row per step with the LLaMA-Factory backend's keys (`backends.llamafactory.METRIC_NAMES`).

Response tokens follow `training.data.encode_chat`: the assistant content and its `<|im_end|>`.
(LLaMA-Factory also counts the "\\n" after `<|im_end|>`; see backends/llamafactory.py.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from psft_orchestrator.configs.training import DPOConfig
from psft_orchestrator.contract import Job, config_for
from psft_orchestrator.training import losses as L
from psft_orchestrator.training.data import Example, collate, encode_chat
from psft_orchestrator.training.recipe import Runtime, Trainer, load_tokenizer

# ----------------------------------------------------------------------------- the loss


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    denom: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sigmoid DPO loss over a batch of pairs (all inputs `[P]` sequence log-probs, summed over
    response tokens; the reference ones are treated as constants).

        r_w = β (log π(y_w|x) − log π_ref(y_w|x))          implicit reward of the chosen response
        r_l = β (log π(y_l|x) − log π_ref(y_l|x))          ... of the rejected response
        L   = (1/P) Σ_pairs −log σ(r_w − r_l)

    With π = π_ref (the first step) every reward is 0 and L = log 2. `denom` replaces P (pass the
    whole step's pair count when accumulating micro-batches).

    Metrics (means over the pairs, detached; TRL's names): rewards/chosen = mean r_w,
    rewards/rejected = mean r_l, rewards/margins = mean (r_w − r_l), rewards/accuracies = fraction
    with r_w > r_l (strictly: 0 at the first step), logps/chosen, logps/rejected = mean policy
    sequence log-probs.
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps.detach())
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps.detach())
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    loss = losses.sum() / (denom if denom is not None else losses.numel())
    with torch.no_grad():
        metrics = {
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
            "logps/chosen": policy_chosen_logps.detach().mean(),
            "logps/rejected": policy_rejected_logps.detach().mean(),
        }
    return loss, metrics


def sequence_logps(logp: Tensor, mask: Tensor) -> Tensor:
    """Σ_t m_t logp_t per row: `[B, T]` token log-probs → `[B]` sequence log-probs."""
    return (logp * mask.to(logp.dtype)).sum(-1)


def pair_logps(
    model: torch.nn.Module, micro: list[tuple[Example, Example]], pad_id: int, rt: Runtime
) -> tuple[Tensor, Tensor]:
    """Chosen and rejected sequence log-probs of a micro-batch of pairs in one forward pass."""
    batch = collate([c for c, _ in micro] + [r for _, r in micro], pad_id)
    with rt.autocast():
        logits = model(
            input_ids=batch["input_ids"].to(rt.device),
            attention_mask=batch["attention_mask"].to(rt.device),
        ).logits
    logp = L.token_logprobs(logits[:, :-1], batch["labels"].to(rt.device))
    seq = sequence_logps(logp, batch["loss_mask"].to(rt.device))
    return seq[: len(micro)], seq[len(micro) :]


# ----------------------------------------------------------------------------- data


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Preference rows `{"prompt": [messages], "chosen": str, "rejected": str}` from any layout
    `data.formats` reads (JSONL, Parquet, datasets directories), in file order."""
    from psft_orchestrator.data.formats import convert, iter_rows

    return [
        row
        if {"prompt", "chosen", "rejected"} <= row.keys() and isinstance(row["chosen"], str)
        else convert(row, "auto", "preference")
        for row in iter_rows(path)
    ]


def encode_pair(tokenizer: Any, row: dict[str, Any]) -> tuple[Example, Example]:
    """(chosen, rejected) conversations tokenised with response masks (`data.encode_chat`)."""
    out = []
    for response in (row["chosen"], row["rejected"]):
        ex = encode_chat(tokenizer, [*row["prompt"], {"role": "assistant", "content": response}])
        ex.target[0] = 0  # token 0 is never predicted
        out.append(ex)
    return out[0], out[1]


def encode_pairs(
    tokenizer: Any, rows: list[dict[str, Any]], max_length: int, truncation: str
) -> tuple[list[tuple[Example, Example]], dict[str, int]]:
    """Tokenise all pairs; a pair with a side longer than `max_length` is dropped or cut there."""
    pairs, stats = (
        [],
        {
            "rows": len(rows),
            "kept": 0,
            "dropped_too_long": 0,
            "truncated": 0,
            "dropped_no_response": 0,
        },
    )
    for row in rows:
        chosen, rejected = encode_pair(tokenizer, row)
        if max(len(chosen), len(rejected)) > max_length:
            if truncation == "drop":
                stats["dropped_too_long"] += 1
                continue
            stats["truncated"] += 1
            chosen, rejected = (
                Example(e.input_ids[:max_length], e.target[:max_length]) for e in (chosen, rejected)
            )
        if chosen.n_targets == 0 or rejected.n_targets == 0:
            stats["dropped_no_response"] += 1
            continue
        pairs.append((chosen, rejected))
        stats["kept"] += 1
    return pairs, stats


# ----------------------------------------------------------------------------- the trainer


def run_dpo(job: Job) -> dict[str, Any]:
    """Native DPO on `job.input("model")` with the pairs of `job.input("data")`; see the module doc."""
    cfg: DPOConfig = config_for(job, DPOConfig)
    if cfg.finetuning_type != "full":
        raise ValueError(
            "the native DPO trainer does full fine-tuning only; use backend llamafactory for LoRA"
        )
    if (cfg.mini_batch_size or cfg.train_batch_size) != cfg.train_batch_size:
        raise ValueError(
            "DPO takes one optimizer step per train batch; leave mini_batch_size unset"
        )
    model_path = Path(job.input("model").path)
    rt = Runtime.from_config(cfg)

    # ---- data: pairs in file order, the remainder of an epoch is dropped
    tokenizer, pad_id = load_tokenizer(model_path)
    pairs, data_stats = encode_pairs(
        tokenizer, read_pairs(job.input("data").path), cfg.max_length, cfg.truncation
    )
    batches_per_epoch = len(pairs) // cfg.train_batch_size
    if batches_per_epoch == 0:
        raise ValueError(
            f"{len(pairs)} usable pairs cannot fill one train batch of {cfg.train_batch_size}"
        )
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * batches_per_epoch))

    # ---- policy, frozen reference (the input model), optimizer, schedule, resume
    run = Trainer("dpo", cfg, rt, model_path, tokenizer, Path(job.checkpoint_dir),
                  [job.out / "metrics.jsonl"], total_steps, reference=True)  # fmt: skip

    n_pairs = cfg.train_batch_size
    sums: dict[str, float] = {}  # pair-weighted metric means over the current step

    def loss_of(i: int, micro: list[tuple[Example, Example]]) -> Tensor:
        with torch.no_grad():
            ref_c, ref_r = pair_logps(run.ref_model, micro, pad_id, rt)
        pol_c, pol_r = pair_logps(run.model, micro, pad_id, rt)
        loss, metrics = dpo_loss(pol_c, pol_r, ref_c, ref_r, cfg.beta, denom=n_pairs)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(micro) / n_pairs
        return loss

    last: dict[str, float] = {}
    with run.metrics_writer() as writer:
        while run.step < total_steps:
            b = run.step % batches_per_epoch
            batch = pairs[b * n_pairs : (b + 1) * n_pairs]
            micros = [
                batch[i : i + cfg.micro_batch_size]
                for i in range(0, len(batch), cfg.micro_batch_size)
            ]
            sums.clear()
            loss, grad_norm, lr = run.optimizer_step(micros, loss_of, "DPO loss")
            run.step += 1
            last = {"loss": loss, **sums, "grad_norm": grad_norm, "lr": lr}
            run.log(writer, last, epoch=run.step / batches_per_epoch)
            run.maybe_save()

    run.finish(job.output_path())
    return {
        "backend": "native",
        "steps": run.step,
        "final_loss": last.get("loss"),
        "final_margin": last.get("rewards/margins"),
        "final_accuracy": last.get("rewards/accuracies"),
        "pairs": len(pairs),
        **{f"data_{k}": v for k, v in data_stats.items()},
    }
