"""AdamW with the usual weight-decay exemptions, and the warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math

import torch

from psft_orchestrator.configs.training import OptimConfig


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases and normalisation weights (all 1-D tensors) are not decayed, as in HF/verl trainers.

    Decaying a norm's gain pulls it towards 0 rather than towards the identity, and biases carry no
    scale to regularise. Embeddings are 2-D and are decayed (the common HF default).
    """
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: two groups, `weight_decay` on matrices, 0 on biases/norms.

    Frozen parameters (requires_grad False, e.g. from `cfg.freeze`) are left out entirely, so they
    get neither updates nor decay. Tied weights appear once (named_parameters de-duplicates).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if _no_decay(name, p) else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters (is every parameter frozen?)")
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # foreach=True is the fast multi-tensor path on both CPU and GPU; fused is CUDA-only.
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=1e-8,
        foreach=True,
    )


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based).

        warm-up (step < W, W = ceil(warmup_ratio · total)):   (step + 1) / W
        then, with progress q = (step − W) / max(1, total − W) in [0, 1]:
          constant   1
          linear     min + (1 − min) · (1 − q)
          cosine     min + (1 − min) · ½ (1 + cos(π q))
    where min = min_lr_ratio. The first warm-up step uses lr/W, not 0 (a 0-lr step is wasted).
    """
    warm = math.ceil(cfg.warmup_ratio * total_steps)
    if step < warm:
        return (step + 1) / warm
    if cfg.lr_scheduler == "constant":
        return 1.0
    q = min(1.0, (step - warm) / max(1, total_steps - warm))
    floor = cfg.min_lr_ratio
    if cfg.lr_scheduler == "linear":
        return floor + (1.0 - floor) * (1.0 - q)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * q))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `lr_factor`; call `scheduler.step()` once after each `optimizer.step()`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
