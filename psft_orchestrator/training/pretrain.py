"""Causal-LM pretraining from scratch on a `{"text": ...}` corpus (the toy world's `pretrain` stage).

Texts are tokenised, each followed by the tokenizer's eos (`<|endoftext|>`, the document
separator), concatenated, and cut into blocks of `max_length` tokens (the remainder is dropped):
every position is a target, so there is no padding and no mask. One optimizer step takes
`mini_batch_size` (default `train_batch_size`) blocks, processed `micro_batch_size` at a time;
blocks are reshuffled each epoch from the seed. The result is an ordinary HF model directory.

With `checkpoint_dir`, a resumable state (weights, optimizer, scheduler, step) is written every
`save_every` steps; a restarted run resumes from it and, since the data order is a function of
the seed and the step, continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from psft_orchestrator.contract import MetricsWriter
from psft_orchestrator.training.config import PretrainConfig
from psft_orchestrator.training.loop import truncate_metrics
from psft_orchestrator.training.optim import build_optimizer, build_scheduler

CHECKPOINT_FILE = "pretrain_state.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last checkpoint (if any) is kept untouched."""


def pack_corpus(tokenizer: Any, corpus_path: Path, max_length: int) -> torch.Tensor:
    """All documents as one eos-separated token stream, cut into a (n_blocks, max_length) tensor."""
    texts = [
        json.loads(line)["text"]
        for line in Path(corpus_path).read_text().splitlines()
        if line.strip()
    ]
    if not texts:
        raise ValueError(f"corpus {corpus_path} has no rows")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n_blocks = len(stream) // max_length
    if n_blocks == 0:
        raise ValueError(f"corpus has {len(stream)} tokens, fewer than one block of {max_length}")
    return torch.tensor(stream[: n_blocks * max_length], dtype=torch.long).view(
        n_blocks, max_length
    )


def _block_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_blocks, generator=g)


def _batch_indices(step: int, batch: int, n_blocks: int, seed: int) -> torch.Tensor:
    """Block indices of optimizer step `step`: a pure function of (step, seed), so resume is exact."""
    per_epoch = n_blocks // batch
    epoch, k = divmod(step, per_epoch)
    return _block_order(n_blocks, seed, epoch)[k * batch : (k + 1) * batch]


def _dtype(cfg: PretrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "bfloat16" or (
        cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


def _save_state(path: Path, model: torch.nn.Module, opt: Any, sched: Any, step: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
        },
        tmp,
    )
    os.replace(tmp, path)


def pretrain(
    cfg: PretrainConfig,
    model_dir: Path,
    corpus_path: Path,
    out_dir: Path,
    metrics_path: Path,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train the model in `model_dir` on `corpus_path`; write the HF model + tokenizer to `out_dir`.

    Returns a summary: steps, tokens seen, first/final loss, blocks, parameters, seconds.
    """
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_dtype(cfg, device)).to(device)
    model.config.use_cache = False
    for name, p in model.named_parameters():
        if any(re.search(rx, name) for rx in cfg.freeze):
            p.requires_grad_(False)

    blocks = pack_corpus(tokenizer, corpus_path, cfg.max_length)
    batch = cfg.mini_batch_size or cfg.train_batch_size
    if blocks.shape[0] < batch:
        raise ValueError(
            f"corpus gives {blocks.shape[0]} blocks of {cfg.max_length} tokens, fewer than a batch of {batch}"
        )
    per_epoch = blocks.shape[0] // batch
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))

    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps)
    start = 0
    state_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    if state_path and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["step"]
        truncate_metrics(Path(metrics_path), start)  # rows past the checkpoint are logged again

    model.train()
    first_loss = loss_value = float("nan")
    params = [p for p in model.parameters() if p.requires_grad]
    with MetricsWriter(metrics_path) as metrics:
        for step in range(start, total_steps):
            idx = _batch_indices(step, batch, blocks.shape[0], cfg.seed)
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for micro in idx.split(cfg.micro_batch_size):
                ids = blocks[micro].to(device)
                loss = model(input_ids=ids, labels=ids).loss
                (loss * len(micro) / len(idx)).backward()
                loss_sum += loss.item() * len(micro)
            loss_value = loss_sum / len(idx)
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"non-finite loss {loss_value} at step {step}; last checkpoint kept"
                )
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            if step == start:
                first_loss = loss_value
            if (step + 1) % cfg.log_every == 0 or step + 1 == total_steps:
                metrics.log(step + 1, loss=loss_value, lr=lr, grad_norm=grad_norm,
                            tokens=(step + 1) * len(idx) * cfg.max_length, elapsed_s=round(time.time() - t0, 2))  # fmt: skip
            if (
                state_path
                and cfg.save_every
                and (step + 1) % cfg.save_every == 0
                and step + 1 < total_steps
            ):
                state_path.parent.mkdir(parents=True, exist_ok=True)
                _save_state(state_path, model, opt, sched, step + 1)

    out_dir = Path(out_dir)
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "steps": total_steps,
        "resumed_from": start,
        "tokens": total_steps * batch * cfg.max_length,
        "blocks": int(blocks.shape[0]),
        "first_loss": first_loss,
        "final_loss": loss_value,
        "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "duration_s": round(time.time() - t0, 2),
    }
