"""Resumable checkpoints of the RL-style trainers (DPO, GRPO): model + optimizer + scheduler + RNG.

    <checkpoint_dir>/step_XXXXXXXX/model/            HF weights
    <checkpoint_dir>/step_XXXXXXXX/trainer_state.pt  kind, step, total_steps, optimizer, scheduler, torch RNG

Written atomically; only the newest is kept. The SFT-family loop (`training.loop`) keeps more
state (data position, θ_old cache) and has its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from psft_orchestrator.training.loop import _atomic_replace_dir, latest_checkpoint, truncate_metrics

STATE_FILE = "trainer_state.pt"


def save(
    checkpoint_dir: Path,
    kind: str,
    step: int,
    total_steps: int,
    model: Any,
    optimizer: Any,
    scheduler: Any,
) -> Path:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"step_{step:08d}"
    tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "model")
    state = {
        "kind": kind,
        "step": step,
        "total_steps": total_steps,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, tmp / STATE_FILE)
    _atomic_replace_dir(tmp, final)
    for older in checkpoint_dir.glob("step_*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def resume(
    checkpoint_dir: Path,
    kind: str,
    total_steps: int,
    optimizer: Any,
    scheduler: Any,
    metrics_path: Path,
) -> int:
    """Restore optimizer, scheduler and RNG from the newest checkpoint; return its step (0: none).

    The model weights are loaded by the caller from `latest_checkpoint(dir) / "model"`. Metric
    rows logged after the checkpoint are dropped, since those steps run again.
    """
    ckpt = latest_checkpoint(checkpoint_dir)
    if ckpt is None:
        return 0
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    if state["total_steps"] != total_steps or state["kind"] != kind:
        raise ValueError(f"checkpoint {ckpt} is from a different run; delete it to start over")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    truncate_metrics(metrics_path, state["step"])
    return state["step"]
