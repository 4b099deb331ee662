"""The SFT-family objectives as small pure functions on tensors.

Every formula is the one in `shared/reference/methods.md`. Notation per response token t:
`logp` = log πθ(y_t | x, y<t) of the demonstrated token (with grad), `old` = the same under θ_old,
`ref` = the same under the frozen initial model, `m` = the response mask (1 on tokens that enter
the loss, 0 on prompt and padding). All tensors are `[batch, seq]`; masked positions may hold any
finite value (they are multiplied by 0 and never reach a gradient).

Normalisation and gradient accumulation: every loss is `Σ_i c_i Σ_t m_it L_it / D` (see
`agg_loss`). It is linear in the rows, so a mini-batch processed as several micro-batches gives the
mini-batch loss *exactly* when each micro-batch is divided by the whole mini-batch's `D`
(`agg_denom(mini_batch_mask, mode)`) and the micro-batch losses are summed. Every loss function
therefore takes an optional `denom`; left at None it is the batch's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from psft_orchestrator.configs.training import LossAgg

# the modes are defined once, with the config field that selects them (torch-free, for --plan)
AGG_MODES: tuple[str, ...] = get_args(LossAgg)

# Bound of log(ratio) before exp(), as in verl: exp(20) ≈ 4.9e8 is finite in fp32 and far past any
# clip range, so the clamp only guards against inf/nan and never changes a clipped loss.
LOG_RATIO_CLAMP = 20.0


# ----------------------------------------------------------------------------- aggregation


def agg_denom(mask: Tensor | Sequence[Tensor], mode: str, horizon: int | None = None) -> Tensor:
    """The divisor `D` that `agg_loss` uses for this mask (a 0-dim float tensor, at least 1).

    `mask` may be a list of micro-batch masks padded to different widths: they count as one
    batch padded to the widest (pass the list of a mini-batch for exact accumulation).

        token-mean               D = Σ_it m_it                    (response tokens)
        seq-mean-token-sum       D = S                            (rows with ≥ 1 response token)
        seq-mean-token-mean      D = S
        seq-mean-token-sum-norm  D = S · T,  T = horizon (default: the padded length mask.shape[-1])

    Fully-masked rows are not counted in S: they are excluded from sequence means. Clamped at 1 so
    an all-masked batch gives a zero loss, not 0/0.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; expected one of {AGG_MODES}")
    if not isinstance(mask, Tensor):
        width = max(m.shape[-1] for m in mask)
        mask = torch.cat([F.pad(m.float(), (0, width - m.shape[-1])) for m in mask])
    m = mask.to(torch.float32)
    if mode == "token-mean":
        d = m.sum()
    else:
        d = (m.sum(-1) > 0).to(torch.float32).sum()
        if mode == "seq-mean-token-sum-norm":
            d = d * float(horizon if horizon is not None else mask.shape[-1])
    return d.clamp(min=1.0)


def agg_loss(
    loss_mat: Tensor, mask: Tensor, mode: str = "token-mean", denom: Tensor | float | None = None
) -> Tensor:
    """Reduce a `[batch, seq]` token-loss matrix to a scalar (verl's `loss_agg_mode` names).

        token-mean               Σ_it m L / Σ_it m
        seq-mean-token-sum       (1/S) Σ_i Σ_t m L
        seq-mean-token-mean      (1/S) Σ_i (Σ_t m L / Σ_t m)
        seq-mean-token-sum-norm  (1/S) Σ_i Σ_t m L / T      (T = padded length; Dr. GRPO's form)

    S counts only rows with at least one response token (fully-masked rows are excluded from the
    sequence means). `denom` replaces the divisor (`agg_denom`): pass the whole mini-batch's to make
    micro-batch accumulation exact.
    """
    m = mask.to(loss_mat.dtype)
    if denom is None:
        denom = agg_denom(mask, mode)
    row_sums = (loss_mat * m).sum(-1)
    if mode == "seq-mean-token-mean":
        # Per-row token mean; empty rows have row_sum 0 so the clamp only avoids 0/0.
        row_sums = row_sums / m.sum(-1).clamp(min=1.0)
    elif mode not in AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; expected one of {AGG_MODES}")
    return row_sums.sum() / denom


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Σ m x / Σ m (0 when the mask is empty): the token-mean used for every logged metric."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------- log-probs, entropy


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(z_t)[y_t] for each position: `[B, T, V]`, `[B, T]` → `[B, T]` (float32 or wider).

    Computed as z_t[y_t] − logsumexp(z_t) one row at a time, so the full `[B, T, V]` log-softmax is
    never materialised (the memory peak is one row's `[T, V]`); the same trick as TRL's
    `selective_log_softmax`. Labels < 0 (ignore index) are read as token 0; mask them out.
    `logits` and `labels` must already be aligned (logits[:, t] predicts labels[:, t]).
    """
    labels = labels.clamp(min=0).unsqueeze(-1)
    out = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        row = row_logits if row_logits.dtype == torch.float64 else row_logits.float()
        picked = row.gather(-1, row_labels).squeeze(-1)
        out.append(picked - torch.logsumexp(row, dim=-1))
    return torch.stack(out)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the full next-token distribution at each position: `[..., V]` → `[...]`.

        H(z) = logsumexp(z) − Σ_v softmax(z)_v · z_v

    (= −Σ p log p, written so no log of a tiny probability is taken). Done row by row in float32
    for the same memory reason as `token_logprobs`; differentiable, though it is only logged.
    """
    flat = logits.reshape(-1, logits.shape[-1]) if logits.dim() > 1 else logits[None]
    out = []
    for chunk in flat.split(4096):
        z = chunk if chunk.dtype == torch.float64 else chunk.float()
        out.append(torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1))
    return torch.cat(out).reshape(logits.shape[:-1])


# ----------------------------------------------------------------------------- objectives


def sft_loss(
    logp: Tensor, mask: Tensor, agg: str = "token-mean", denom: Tensor | float | None = None
) -> Tensor:
    """Cross-entropy on response tokens:  L = Σ m_t · (−logp_t) / N   (token-mean).

    Also the plain CE logged by every objective: `sft_loss(logp.detach(), mask)`.
    """
    return agg_loss(-logp, mask, agg, denom)


def psft_loss(
    logp: Tensor,
    old_logp: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    agg: str = "token-mean",
    denom: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Proximal SFT: PPO's clipped surrogate with the advantage fixed at A = +1.

        r_t = exp(clamp(logp_t − old_t, −20, 20))
        L_t = max(−A·r_t, −A·clamp(r_t, 1 − ε_low, 1 + ε_high))  =  −min(r_t, 1 + ε_high)
        L   = Σ m_t L_t / N

    d L / d logp_t = −r_t / N when r_t ≤ 1 + ε_high, else 0 (tokens already pushed past the trust
    region get no gradient). With A = +1 the lower clip never binds.

    Metrics (token means over the mask, detached):
        clipfrac        fraction of tokens where the upper clip binds (r_t > 1 + ε_high)
        clipfrac_lower  fraction where the lower clip binds (always 0 for A = +1; logged as a check)
        ppo_kl          mean of −clamp(logp_t − old_t, −20, 20) (verl's clamped log-ratio)
    `old_logp` is treated as a constant (detached here).
    """
    old_logp = old_logp.detach()
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    advantage = 1.0
    unclipped = -advantage * ratio
    clipped = -advantage * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    loss = agg_loss(loss_mat, mask, agg, denom)
    with torch.no_grad():
        upper = clipped > unclipped  # only when r > 1 + ε_high
        lower = (clipped > unclipped) & (ratio < 1.0 - clip_low)
        metrics = {
            "clipfrac": masked_mean(upper.to(logp.dtype), mask),
            "clipfrac_lower": masked_mean(lower.to(logp.dtype), mask),
            "ppo_kl": masked_mean(-log_ratio.detach(), mask),  # clamped, as verl logs it
        }
    return loss, metrics


def psft_clipped(logp: Tensor, old_logp: Tensor, mask: Tensor, clip_high: float = 0.28) -> Tensor:
    """Boolean `[B, T]`: response tokens whose ratio is above 1 + ε_high (for the clipped-token cloud)."""
    ratio = torch.exp((logp.detach() - old_logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    return (ratio > 1.0 + clip_high) & mask.bool()


KLKind = Literal["k1", "k2", "k3"]
_KL_ALIASES = {"k1": "k1", "kl": "k1", "k2": "k2", "mse": "k2", "k3": "k3", "low_var_kl": "k3"}


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL estimate between πθ and the reference, `[B, T]` (verl's estimators).

        k1 = logp − ref
        k2 = ½ (logp − ref)²
        k3 = exp(d) − d − 1,  d = clamp(ref − logp, −20, 20),  result clamped to [−10, 10]
             (verl's "low_var_kl", unbiased and ≥ 0)

    verl's names "kl", "mse", "low_var_kl" are accepted as aliases. `ref_logp` is detached.
    """
    if kind not in _KL_ALIASES:
        raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")
    kind = _KL_ALIASES[kind]
    ref_logp = ref_logp.detach()
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


def sft_kl_loss(
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    coef: float = 0.5,
    kind: str = "k3",
    agg: str = "token-mean",
    denom: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SFT-KL:  L = L_SFT + β · Σ m_t k(logp_t, ref_t) / N.   Metrics: `kl` (token mean of k)."""
    kl_mat = kl_penalty(logp, ref_logp, kind)
    loss = sft_loss(logp, mask, agg, denom) + coef * agg_loss(kl_mat, mask, agg, denom)
    return loss, {"kl": masked_mean(kl_mat.detach(), mask)}


def dft_loss(
    logp: Tensor, mask: Tensor, agg: str = "token-mean", denom: Tensor | float | None = None
) -> Tensor:
    """Dynamic Fine-Tuning: the token CE weighted by its own detached probability.

        L = Σ m_t · sg(p_t) · (−logp_t) / N,   p_t = exp(logp_t),  sg = stop-gradient

    Gradient w.r.t. the logits z_t: sg(p_t) · (softmax(z_t) − onehot(y_t)) / N.
    Log the plain CE next to it with `sft_loss(logp.detach(), mask)`.
    """
    weight = torch.exp(logp.detach())
    return agg_loss(weight * -logp, mask, agg, denom)


def iwsft_loss(
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    level: Literal["sequence", "token"] = "sequence",
    weight_clip: tuple[float, float] | None = None,
    agg: str = "token-mean",
    denom: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Importance-weighted SFT against the frozen reference (initial) model; weights are detached.

    sequence level (the iw-SFT authors' default), weight_clip default (0, 16):
        w_i = clamp(exp(mean_t(logp_it − ref_it)), 0, 16)        (mean over the row's response tokens)
        L   = Σ_i w_i Σ_t m_it (−logp_it) / N
    token level (the setting the PSFT paper quotes), weight_clip default (0.2, 1.8):
        w_it = clamp(exp(logp_it − ref_it), 0.2, 1.8)
        L    = Σ_it m_it w_it (−logp_it) / N

    Metrics: `iw_weight` = mean weight (over non-empty rows, or over response tokens).
    """
    if level not in ("sequence", "token"):
        raise ValueError(f"unknown iw-SFT level {level!r}; expected 'sequence' or 'token'")
    lo, hi = (
        weight_clip
        if weight_clip is not None
        else ((0.0, 16.0) if level == "sequence" else (0.2, 1.8))
    )
    with torch.no_grad():
        m = mask.to(logp.dtype)
        # Masked positions may hold anything: zero them before exp/mean so they cannot leak inf/nan.
        diff = torch.where(mask.bool(), logp - ref_logp, torch.zeros_like(logp))
        if level == "sequence":
            mean_diff = diff.sum(-1) / m.sum(-1).clamp(min=1.0)
            w_seq = torch.exp(mean_diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).clamp(lo, hi)
            weight = w_seq[:, None].expand_as(logp)
            rows = (m.sum(-1) > 0).to(logp.dtype)
            mean_w = (w_seq * rows).sum() / rows.sum().clamp(min=1.0)
        else:
            weight = torch.exp(diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).clamp(lo, hi)
            mean_w = masked_mean(weight, mask)
    loss = agg_loss(weight * -logp, mask, agg, denom)
    return loss, {"iw_weight": mean_w}


def top_entropy_mask(entropy: Tensor, mask: Tensor, frac: float) -> Tensor:
    """PSFT-Ent: keep only the top `frac` of response tokens by entropy (ceil, at least 1).

    Returns a mask of the same shape with the other response tokens zeroed. Ties at the threshold
    are all kept (the count may exceed ceil(frac · n) by the number of ties).
    """
    m = mask.bool()
    n = int(m.sum())
    if n == 0:
        return mask
    k = max(1, math.ceil(frac * n))
    threshold = entropy[m].float().topk(k).values.min()
    return (m & (entropy.float() >= threshold)).to(mask.dtype)
