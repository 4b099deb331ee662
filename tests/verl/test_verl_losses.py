"""Our loss adapters on verl's no-padding layout give exactly `training.losses` on the padded batch.

The layout is verl's: jagged nested `[B, j]` log-probs (position t scores token t+1) and loss
mask (per token), the global token count in `batch_num_tokens`. Micro-batches of one mini-batch
must sum to the mini-batch loss, which is how verl's engine accumulates gradients.
"""

from __future__ import annotations

import torch
from verl.utils import tensordict_utils as tu

from psft_orchestrator.backends.verl.losses import dft_loss_fn, psft_loss_fn, sft_loss_fn
from psft_orchestrator.training import losses as L

LENGTHS = [5, 7, 4, 6]


def make_batch(seed: int = 0):
    """Per-sequence token log-probs (current and old) and masks, padded and as verl's nested tensors."""
    g = torch.Generator().manual_seed(seed)
    logp, old, token_mask = [], [], []
    for n in LENGTHS:
        logp.append(-torch.rand(n, generator=g, dtype=torch.float64) * 3)
        old.append(logp[-1] + (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 0.8)
        m = torch.zeros(n, dtype=torch.int64)
        m[2:] = 1  # prompt = first 2 tokens, response = the rest
        token_mask.append(m)
    # position t of log_probs scores token t+1: the loss mask of position t is token_mask[t+1]
    aligned = [torch.cat([m[1:], torch.zeros(1, dtype=m.dtype)]) for m in token_mask]
    T = max(LENGTHS)

    def pad(xs, value=0):
        return torch.stack(
            [torch.cat([x, torch.full((T - len(x),), value, dtype=x.dtype)]) for x in xs]
        )

    return logp, old, token_mask, pad(logp), pad(old), pad(aligned)


def verl_inputs(logp, old, token_mask, rows, global_tokens):
    nt = lambda xs: torch.nested.as_nested_tensor([xs[i] for i in rows], layout=torch.jagged)  # noqa: E731
    model_output = {"log_probs": nt(logp)}
    data = tu.get_tensordict(
        {"loss_mask": nt(token_mask), "old_log_probs": nt(old)},
        non_tensor_dict={"batch_num_tokens": global_tokens, "dp_size": 1, "pad_mode": "no_padding"},
    )
    return model_output, data


def test_psft_equals_psft_loss_and_micro_batches_sum():
    logp, old, token_mask, P, Q, M = make_batch()
    P.requires_grad_(True)
    want, want_m = L.psft_loss(P, Q, M, 0.2, 0.28)
    want.backward()
    n = int(M.sum())
    logp_leaf = [x.clone().requires_grad_(True) for x in logp]
    total, clipfrac, ppo_kl = 0.0, 0.0, 0.0
    for rows in ([0, 1], [2, 3]):  # two micro-batches of one mini-batch
        out, data = verl_inputs(logp_leaf, old, token_mask, rows, n)
        loss, metrics = psft_loss_fn(model_output=out, data=data, clip_low=0.2, clip_high=0.28)
        loss.backward()
        total += float(loss.detach())
        clipfrac += metrics["train/clipfrac"]
        ppo_kl += metrics["train/ppo_kl"]
    assert abs(total - float(want)) < 1e-12
    assert (
        abs(clipfrac - float(want_m["clipfrac"])) < 1e-12 and 0 < clipfrac < 1
    )  # the clip binds somewhere
    assert abs(ppo_kl - float(want_m["ppo_kl"])) < 1e-12
    for i, n_i in enumerate(LENGTHS):  # same gradient per token
        assert torch.allclose(logp_leaf[i].grad, P.grad[i, :n_i], atol=1e-12)


def test_psft_first_mini_batch_is_minus_one():
    logp, _, token_mask, *_ = make_batch()
    n = sum(int(m[1:].sum()) for m in token_mask)
    out, data = verl_inputs(logp, logp, token_mask, range(4), n)
    loss, metrics = psft_loss_fn(model_output=out, data=data)
    assert abs(float(loss) + 1.0) < 1e-12 and metrics["train/ppo_kl"] == 0.0


def test_sft_and_dft_match_verl_and_ours():
    from verl.workers.utils.losses import sft_loss as verl_sft_loss

    logp, old, token_mask, P, _, M = make_batch(1)
    n = int(M.sum())
    out, data = verl_inputs(logp, old, token_mask, range(4), n)
    ours, _ = sft_loss_fn(model_output=out, data=data)
    theirs, _ = verl_sft_loss(None, out, data)
    assert abs(float(ours) - float(theirs)) < 1e-12  # same alignment convention as verl
    assert abs(float(ours) - float(L.sft_loss(P, M))) < 1e-12
    dft, dmetrics = dft_loss_fn(model_output=out, data=data)
    assert abs(float(dft) - float(L.dft_loss(P, M))) < 1e-12
    assert abs(dmetrics["train/ce"] - float(ours)) < 1e-12
