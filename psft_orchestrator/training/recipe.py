"""The skeleton every native trainer shares (SFT family, DPO, GRPO, pretrain).

A trainer reads top to bottom like a torchtune recipe:

    rt = Runtime.from_config(cfg)                       device, autocast, seeds
    tokenizer, pad_id = load_tokenizer(model_path)      then the trainer's own data
    run = Trainer(kind, cfg, rt, model_path, ...)       policy (from the newest good checkpoint),
                                                        freezing, reference, AdamW, schedule, resume
    while run.step < run.total_steps:
        loss, grad_norm, lr = run.optimizer_step(micro_batches, loss_of)   the step body
        run.step += 1; run.log(row); run.maybe_save(...)                  metrics, progress, save
    run.finish(out_dir)                                 the final HF model directory

Precision: weights and optimizer state stay fp32 (unless a trainer asks otherwise); bf16 is used
through autocast when supported. Pure bf16 weights would swallow PSFT's 1e-6 updates.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from psft_orchestrator.contract import MetricsWriter, write_progress
from psft_orchestrator.training import checkpoint
from psft_orchestrator.training.optim import build_optimizer, build_scheduler


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became inf/nan; the last good checkpoint is left in place."""


# ----------------------------------------------------------------------------- setup pieces


@dataclass
class Runtime:
    """Where and in which precision a run computes."""

    device: torch.device
    amp: torch.dtype | None  # autocast dtype; None = plain fp32

    @classmethod
    def from_config(cls, cfg: Any) -> Runtime:
        """Pick the device and autocast dtype, and seed Python's and torch's RNGs from `cfg.seed`."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        return cls(device, amp_dtype(cfg.dtype, device))

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. auto = bf16 on a GPU that supports it."""
    if choice == "float32":
        return None
    if choice == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def load_tokenizer(path: Path) -> tuple[Any, int]:
    """The tokenizer and its pad id (eos when it has no pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    pad = tokenizer.pad_token_id
    return tokenizer, pad if pad is not None else tokenizer.eos_token_id


def load_model(path: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.use_cache = False  # training never decodes; the KV cache only costs memory
    return model.to(device)


def freeze(model: torch.nn.Module, patterns: list[str]) -> int:
    """Set requires_grad=False on parameters whose name matches any regex; return how many."""
    n = 0
    for pat in patterns:
        hits = [p for name, p in model.named_parameters() if re.search(pat, name)]
        if not hits:
            raise ValueError(f"freeze pattern {pat!r} matches no parameter name")
        for p in hits:
            p.requires_grad_(False)
            n += p.numel()
    return n


def input_dtype(model_path: Path) -> torch.dtype:
    """The dtype the input model was stored in; the output is saved the same way (bf16 in, bf16 out)."""
    from transformers import AutoConfig

    dt = getattr(AutoConfig.from_pretrained(model_path), "dtype", None)
    if isinstance(dt, str):
        dt = getattr(torch, dt, None)
    return dt if isinstance(dt, torch.dtype) else torch.float32


def save_model_dir(model: Any, tokenizer: Any, out_dir: Path, dtype: torch.dtype) -> None:
    """Write the final HF model directory (weights in `dtype`, tokenizer) atomically."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(dtype).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    checkpoint.replace_dir(tmp, out_dir)


class Mean:
    """Weighted means over the micro-batches of one step (weights: token or row counts)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, name: str, value: Tensor | float, weight: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value) * weight
        self.weights[name] = self.weights.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / max(self.weights[k], 1e-12) for k in self.sums}


# ----------------------------------------------------------------------------- the trainer state


class Trainer:
    """Models, optimizer, schedule, step counter, checkpoints and metrics of one training run.

    Built after the trainer has read its data (it needs `total_steps`). Loads the policy from the
    newest good checkpoint in `checkpoint_dir` (or `model_path`), freezes `cfg.freeze`, loads the
    frozen reference when asked, builds AdamW and the schedule, then restores optimizer, schedule,
    RNG and metric files from the checkpoint. `self.resumed.extra` holds the trainer's own state.
    """

    def __init__(
        self,
        kind: str,
        cfg: Any,
        rt: Runtime,
        model_path: Path,
        tokenizer: Any,
        checkpoint_dir: Path | None,
        metric_files: Sequence[Path],
        total_steps: int,
        *,
        reference: bool = False,
        model_dtype: torch.dtype = torch.float32,
        scheduler_steps: int | None = None,
    ) -> None:
        self.kind, self.cfg, self.rt, self.tokenizer = kind, cfg, rt, tokenizer
        self.model_path = Path(model_path)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.metric_files = [Path(p) for p in metric_files]
        self.total_steps = total_steps
        self.resumed = checkpoint.latest(self.checkpoint_dir, kind, total_steps)
        source = self.resumed.model_dir if self.resumed else self.model_path
        self.model = load_model(source, rt.device, model_dtype)
        freeze(self.model, cfg.freeze)
        self.model.train()
        self.ref_model = None
        if reference:
            self.ref_model = load_model(self.model_path, rt.device).eval().requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, scheduler_steps or total_steps)
        self.step = 0
        if self.resumed:
            self.resumed.restore(self.optimizer, self.scheduler)
            self.resumed.restore_metrics(self.metric_files)
            self.step = self.resumed.step

    # ---- the step body
    def optimizer_step(
        self, micros: Sequence[Any], loss_of: Callable[[int, Any], Tensor], what: str = "loss"
    ) -> tuple[float, float, float]:
        """One optimizer step: zero_grad, then per micro-batch `loss_of(i, micro)` (already divided
        by the whole step's denominator), finite check, backward; clip, finite check, AdamW and
        schedule step. Returns (summed loss, grad norm before clipping, lr used)."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i, micro in enumerate(micros):
            loss = loss_of(i, micro)
            if not torch.isfinite(loss):
                self.fail(
                    f"non-finite {what} ({loss.item()}) at step {self.step + 1} (micro-batch {i})"
                )
            loss.backward()
            total += loss.item()
            del loss  # free the graph's activations before the next micro-batch
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        if not torch.isfinite(grad_norm):
            self.fail(f"non-finite gradient norm at step {self.step + 1}")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return total, float(grad_norm), lr

    def fail(self, message: str) -> None:
        where = f"; the last good checkpoint is kept in {self.checkpoint_dir}"
        raise NonFiniteLossError(message + (where if self.checkpoint_dir else ""))

    # ---- metrics, progress, checkpoints
    def metrics_writer(self) -> MetricsWriter:
        return MetricsWriter(self.metric_files[0])

    def log(self, writer: MetricsWriter, row: dict[str, Any], **extra: Any) -> None:
        """Log `row` every `log_every` steps and at the last one; update progress.json."""
        if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
            writer.log(self.step, **row, **extra)
            write_progress(self.metric_files[0].parent, self.step, self.total_steps)

    def maybe_save(self, at_end: bool = False, **extra: Any) -> None:
        """Checkpoint every `save_every` steps and at the end (`at_end` or the last step)."""
        every = self.cfg.save_every
        if at_end or self.step == self.total_steps or (every and self.step % every == 0):
            self.save(**extra)

    def save(self, **extra: Any) -> None:
        if self.checkpoint_dir is None:
            return
        state = checkpoint.trainer_state(
            self.kind, self.step, self.total_steps, self.optimizer, self.scheduler, **extra
        )
        checkpoint.save(
            self.checkpoint_dir, self.step, self.model, self.tokenizer, state, self.metric_files
        )

    def finish(self, out_dir: Path, dtype: torch.dtype | None = None) -> None:
        """The final HF model directory, in the input model's dtype unless told otherwise."""
        dtype = dtype if dtype is not None else input_dtype(self.model_path)
        save_model_dir(self.model, self.tokenizer, Path(out_dir), dtype)
