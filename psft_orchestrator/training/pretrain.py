"""Causal-LM pretraining from scratch on a `{"text": ...}` corpus (the toy world's `pretrain` stage).

Texts are tokenised, each followed by the tokenizer's eos (`<|endoftext|>`, the document
separator), concatenated, and cut into blocks of `max_length` tokens (the remainder is dropped):
every position is a target, so there is no padding and no mask. One optimizer step takes
`mini_batch_size` (default `train_batch_size`) blocks, processed `micro_batch_size` at a time;
blocks are reshuffled each epoch from the seed. The result is an ordinary HF model directory.

With `checkpoint_dir`, a checkpoint in the shared format (`training.checkpoint`) is written every
`save_every` steps and at the end; a restarted run resumes from the newest good one and, since
the data order is a function of the seed and the step, continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from psft_orchestrator.configs.training import PretrainConfig
from psft_orchestrator.training.recipe import Runtime, Trainer, load_tokenizer


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


def block_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_blocks, generator=g)


def batch_indices(step: int, batch: int, n_blocks: int, seed: int) -> torch.Tensor:
    """Block indices of optimizer step `step`: a pure function of (step, seed), so resume is exact."""
    per_epoch = n_blocks // batch
    epoch, k = divmod(step, per_epoch)
    return block_order(n_blocks, seed, epoch)[k * batch : (k + 1) * batch]


def weights_dtype(cfg: PretrainConfig, device: torch.device) -> torch.dtype:
    """Pretraining keeps the weights themselves in bf16 on a GPU that supports it (no autocast):
    from-scratch updates are large, unlike PSFT's."""
    if cfg.dtype == "bfloat16" or (
        cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


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
    rt = Runtime.from_config(cfg)
    tokenizer, _ = load_tokenizer(model_dir)
    blocks = pack_corpus(tokenizer, corpus_path, cfg.max_length)
    batch = cfg.mini_batch_size or cfg.train_batch_size
    if blocks.shape[0] < batch:
        raise ValueError(
            f"corpus gives {blocks.shape[0]} blocks of {cfg.max_length} tokens, fewer than a batch of {batch}"
        )
    per_epoch = blocks.shape[0] // batch
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    dtype = weights_dtype(cfg, rt.device)
    run = Trainer("pretrain", cfg, rt, model_dir, tokenizer, checkpoint_dir, [Path(metrics_path)],
                  total_steps, model_dtype=dtype)  # fmt: skip
    start = run.step

    first_loss = loss_value = float("nan")
    with run.metrics_writer() as writer:
        while run.step < total_steps:
            idx = batch_indices(run.step, batch, blocks.shape[0], cfg.seed)
            micros = idx.split(cfg.micro_batch_size)

            def loss_of(i: int, micro: torch.Tensor, n: int = len(idx)) -> torch.Tensor:
                ids = blocks[micro].to(rt.device)
                return run.model(input_ids=ids, labels=ids).loss * len(micro) / n

            loss_value, grad_norm, lr = run.optimizer_step(micros, loss_of)
            run.step += 1
            if run.step == start + 1:
                first_loss = loss_value
            tokens = run.step * len(idx) * cfg.max_length
            elapsed = round(time.time() - t0, 2)
            row = dict(
                loss=loss_value, lr=lr, grad_norm=grad_norm, tokens=tokens, elapsed_s=elapsed
            )
            run.log(writer, row)
            run.maybe_save()

    run.model.config.use_cache = True
    run.finish(Path(out_dir), dtype)
    return {
        "steps": total_steps,
        "resumed_from": start,
        "tokens": total_steps * batch * cfg.max_length,
        "blocks": int(blocks.shape[0]),
        "first_loss": first_loss,
        "final_loss": loss_value,
        "parameters": sum(p.numel() for p in {id(p): p for p in run.model.parameters()}.values()),
        "duration_s": round(time.time() - t0, 2),
    }
