"""Our SFT-family losses (`training.losses`) in the shape verl's training worker calls a loss.

verl's engine calls `loss_fn(model_output=..., data=..., dp_group=...)` once per micro-batch and
backpropagates the returned scalar. In verl's no-padding layout (the SFT trainer's default),
`model_output["log_probs"]` and `data["loss_mask"]` are jagged nested tensors `[B, j]`; position
t of `log_probs` scores token t+1, so the loss mask is shifted left by one (as verl's own
`sft_loss` does). verl puts the token count of the whole mini-batch over all data-parallel ranks
in `data["batch_num_tokens"]` and the rank count in `data["dp_size"]`; FSDP averages gradients
over ranks, so each rank's micro-batch loss is `Σ m L / (batch_num_tokens / dp_size)`.

The token math itself is not re-implemented here: these adapters flatten verl's layout to a
`[1, N]` row and call `psft_loss` / `dft_loss` / `sft_loss` with that global denominator.

Metrics: each micro-batch returns its *part* of a global token mean (`Σ m x / batch_num_tokens`);
verl collects one value per micro-batch (and rank), and summing them gives the mini-batch's token
mean. `launch.map_metrics` and the PSFT trainer do that sum.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from psft_orchestrator.training import losses as L


def flat_batch(model_output: dict[str, Any], data: Any) -> tuple[Tensor, Tensor, float, float]:
    """(log_probs [1, N], aligned loss mask [1, N], per-rank denominator, global token count)."""
    log_prob = model_output["log_probs"]
    loss_mask = data["loss_mask"]
    if not getattr(log_prob, "is_nested", False):
        raise ValueError(
            "the verl PSFT/DFT losses need verl's no-padding layout (data.pad_mode=no_padding)"
        )
    logp = log_prob.values()[None]
    mask = torch.roll(loss_mask.values(), shifts=-1, dims=0)[None].to(logp.dtype)
    global_tokens = float(data["batch_num_tokens"])
    denom = global_tokens / float(data["dp_size"])
    return logp, mask, denom, global_tokens


def _part(x: Tensor, mask: Tensor, global_tokens: float) -> float:
    """This micro-batch's share of a token mean over the whole (global) mini-batch."""
    return float((x.detach() * mask).sum() / max(global_tokens, 1.0))


def _entropy_part(
    model_output: dict[str, Any], mask: Tensor, global_tokens: float
) -> dict[str, float]:
    ent = model_output.get("entropy")
    if ent is None:
        return {}
    return {"train/entropy": _part(ent.values()[None], mask, global_tokens)}


def _token_loss_fn(loss: Any, doc: str) -> Any:
    """A verl loss function (verl's signature) around one of our token losses; logs plain CE
    and entropy beside the loss."""

    def loss_fn(
        config: Any = None,
        model_output: dict[str, Any] | None = None,
        data: Any = None,
        dp_group: Any = None,
    ) -> tuple[Tensor, dict[str, float]]:
        logp, mask, denom, n = flat_batch(model_output, data)
        value = loss(logp, mask, denom=denom)
        return value, {"train/ce": _part(-logp, mask, n), **_entropy_part(model_output, mask, n)}

    loss_fn.__doc__ = doc
    return loss_fn


sft_loss_fn = _token_loss_fn(
    L.sft_loss, "Token-mean CE (equal to verl's `sft_loss`); PSFT's warm-up steps use it."
)
dft_loss_fn = _token_loss_fn(
    L.dft_loss, "DFT: Σ m · sg(p) · (−logp) / N, logging the plain CE beside it."
)


def psft_loss_fn(
    config: Any = None,
    model_output: dict[str, Any] | None = None,
    data: Any = None,
    dp_group: Any = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[Tensor, dict[str, float]]:
    """PSFT: `psft_loss` with θ_old's log-probs from `data["old_log_probs"]` (same layout as log_probs)."""
    logp, mask, denom, n = flat_batch(model_output, data)
    old = data["old_log_probs"].values()[None].to(logp.dtype)
    loss, m = L.psft_loss(logp, old, mask, clip_low, clip_high, denom=denom)
    # psft_loss's metrics are token means over this micro-batch: reweight them to global parts.
    share = float(mask.sum()) / max(n, 1.0)
    metrics = {f"train/{k}": float(v) * share for k, v in m.items()}
    metrics["train/ce"] = _part(-logp, mask, n)
    metrics.update(_entropy_part(model_output, mask, n))
    return loss, metrics
