"""Each loss against an independent float64 reference written here with plain Python `math`
(values AND gradients), plus the gradient identities PSFT's argument rests on."""

from __future__ import annotations

import math

import pytest
import torch

from psft_orchestrator.training import losses as L

# The worked example of shared/reference/methods.md.
OLD = [[-1.0, -2.0, -0.5, -3.0], [-0.2, -1.5, -4.0, -9.9]]
LOGP = [[-0.9, -1.5, -0.9, -3.0], [-0.1, -1.9, -3.0, 0.0]]
MASK = [[1, 1, 1, 1], [1, 1, 1, 0]]


def t64(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def grad_of(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g.tolist()


def assert_close(a, b, tol=1e-9):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert torch.allclose(a, b, atol=tol, rtol=tol), f"{a} != {b}"


# ----------------------------------------------------------------------------- references


def ref_weights(mask, mode):
    """Per-token coefficient c_it so that agg(L) = Σ c_it L_it (the aggregation as a linear map)."""
    rows = [sum(r) for r in mask]
    s = sum(1 for n in rows if n > 0)
    t_len = len(mask[0])
    if mode == "token-mean":
        return [[m / sum(rows) for m in r] for r in mask]
    if mode == "seq-mean-token-sum":
        return [[m / s for m in r] for r in mask]
    if mode == "seq-mean-token-mean":
        return [[(m / n / s if n else 0.0) for m in r] for r, n in zip(mask, rows, strict=True)]
    if mode == "seq-mean-token-sum-norm":
        return [[m / s / t_len for m in r] for r in mask]
    raise AssertionError(mode)


def ref_agg(mat, mask, mode):
    c = ref_weights(mask, mode)
    return sum(ci * x for cr, xr in zip(c, mat, strict=True) for ci, x in zip(cr, xr, strict=True))


def ref_psft(logp, old, mask, lo, hi, mode="token-mean"):
    """Value, d/dlogp, clipfrac, ppo_kl, written from −min(r, 1+ε_high) directly."""
    c = ref_weights(mask, mode)
    loss, grad, n, clipped, kl = 0.0, [], sum(map(sum, mask)), 0, 0.0
    for lr, orow, mr, cr in zip(logp, old, mask, c, strict=True):
        grow = []
        for x, o, m, ci in zip(lr, orow, mr, cr, strict=True):
            d = x - o
            r = math.exp(max(-20.0, min(20.0, d)))
            loss += ci * -min(r, 1 + hi)
            # the gradient flows only inside the clamp of d and below the upper clip
            grow.append(-ci * r if (r <= 1 + hi and -20 < d < 20) else 0.0)
            if m:
                clipped += r > 1 + hi
                kl += -max(-20.0, min(20.0, d))  # verl logs the clamped log-ratio
        grad.append(grow)
    return loss, grad, clipped / n, kl / n


# ----------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_agg_loss_every_mode_with_a_fully_masked_row(mode):
    mat = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    mask = [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    x = t64(mat, grad=True)
    out = L.agg_loss(x, torch.tensor(mask), mode)
    assert_close(out.item(), ref_agg(mat, mask, mode))
    assert_close(grad_of(out, x), ref_weights(mask, mode))


def test_agg_values_by_hand():
    mat, mask = (
        t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
        torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]]),
    )
    assert L.agg_loss(mat, mask, "token-mean").item() == pytest.approx(27 / 5)
    assert L.agg_loss(mat, mask, "seq-mean-token-sum").item() == pytest.approx((3 + 24) / 2)
    assert L.agg_loss(mat, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 8) / 2)
    assert L.agg_loss(mat, mask, "seq-mean-token-sum-norm").item() == pytest.approx(
        (3 + 24) / 2 / 3
    )


def test_all_masked_gives_zero_not_nan():
    for mode in L.AGG_MODES:
        assert L.agg_loss(t64([[1.0, 2.0]]), torch.zeros(1, 2), mode).item() == 0.0
    with pytest.raises(ValueError):
        L.agg_loss(t64([[1.0]]), torch.ones(1, 1), "mean")


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_micro_batches_with_the_mini_batch_denominator_sum_to_the_mini_batch_loss(mode):
    g = torch.Generator().manual_seed(0)
    mat = torch.randn(6, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(6, 5, generator=g) > 0.4).long()
    mask[2] = 0
    whole = L.agg_loss(mat, mask, mode)
    denom = L.agg_denom(mask, mode)
    parts = sum(L.agg_loss(mat[i : i + 2], mask[i : i + 2], mode, denom) for i in range(0, 6, 2))
    # micro-batches keep the full padded length here; the loop passes the mini-batch horizon
    assert_close(parts.item(), whole.item(), 1e-12)


# ----------------------------------------------------------------------------- SFT / PSFT


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_sft_value_and_gradient(mode):
    x = t64(LOGP, grad=True)
    out = L.sft_loss(x, torch.tensor(MASK), mode)
    assert_close(out.item(), ref_agg([[-v for v in r] for r in LOGP], MASK, mode))
    assert_close(grad_of(out, x), [[-c for c in r] for r in ref_weights(MASK, mode)])


def test_psft_worked_example_from_methods_md():
    x = t64(LOGP, grad=True)
    loss, m = L.psft_loss(x, t64(OLD), torch.tensor(MASK), clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.0158546, abs=1e-7)
    assert m["clipfrac"].item() == pytest.approx(2 / 7)
    assert m["ppo_kl"].item() == pytest.approx(-0.1285714, abs=1e-7)
    assert m["clipfrac_lower"].item() == 0.0
    expected = [[-0.157882, 0, -0.095760, -0.142857], [-0.157882, -0.095760, 0, 0]]
    assert_close(grad_of(loss, x), expected, tol=1e-6)
    ref = ref_psft(LOGP, OLD, MASK, 0.2, 0.28)
    assert loss.item() == pytest.approx(ref[0], abs=1e-12)


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_psft_below_inside_above_trust_region_and_huge_deltas(mode):
    # log-ratios: far below (r ≈ 0.37 < 1-ε_low), inside, just below/above 1+ε_high, above, |Δ| > 20
    deltas = [
        [-1.0, -0.1, 0.0, 0.1],
        [math.log(1.27), math.log(1.29), 0.7, 25.0],
        [-25.0, 0.3, 0.2, -0.05],
    ]
    old = [[-2.0, -1.0, -3.0, -0.5], [-1.5, -2.5, -4.0, -30.0], [-0.1, -1.0, -2.0, -3.0]]
    logp = [
        [o + d for o, d in zip(orow, drow, strict=True)]
        for orow, drow in zip(old, deltas, strict=True)
    ]
    mask = [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]]
    for lo, hi in [(0.2, 0.28), (0.2, 0.2)]:
        x = t64(logp, grad=True)
        loss, m = L.psft_loss(x, t64(old), torch.tensor(mask), lo, hi, agg=mode)
        ref_loss, ref_grad, ref_cf, ref_kl = ref_psft(logp, old, mask, lo, hi, mode)
        assert torch.isfinite(loss)
        assert loss.item() == pytest.approx(ref_loss, abs=1e-10)
        assert_close(grad_of(loss, x), ref_grad)
        assert m["clipfrac"].item() == pytest.approx(ref_cf)
        assert m["ppo_kl"].item() == pytest.approx(ref_kl)
        assert m["clipfrac_lower"].item() == 0.0  # A = +1: the lower clip never binds


def test_psft_with_ratio_one_has_exactly_sfts_gradient():
    """First mini-batch of a train batch (θ_old = θ): PSFT's gradient is SFT's, exactly."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    mask = (torch.rand(3, 7, generator=g) > 0.3).long()
    for mode in L.AGG_MODES:
        logp = L.token_logprobs(logits, labels)
        psft, m = L.psft_loss(logp, logp.detach(), mask, agg=mode)
        g_psft = grad_of(psft, logits)
        g_sft = grad_of(L.sft_loss(L.token_logprobs(logits, labels), mask, mode), logits)
        assert torch.equal(torch.tensor(g_psft), torch.tensor(g_sft))
        assert m["clipfrac"].item() == 0.0 and m["ppo_kl"].item() == 0.0
        # and its value is −1 per token under token-mean
        if mode == "token-mean":
            assert psft.item() == pytest.approx(-1.0)


def test_token_pushed_above_trust_region_gets_no_gradient_through_the_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 4, 9, generator=g, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 3, 4]])
    old = L.token_logprobs(logits, labels)
    pushed = logits.clone()
    pushed[0, 2, 3] += 1.5  # token 2's probability rises well past 1.28 × old
    pushed.requires_grad_(True)
    logp = L.token_logprobs(pushed, labels)
    assert math.exp((logp[0, 2] - old[0, 2]).item()) > 1.28
    loss, m = L.psft_loss(logp, old, torch.ones(1, 4), clip_high=0.28)
    (gz,) = torch.autograd.grad(loss, pushed)
    assert torch.count_nonzero(gz[0, 2]) == 0
    assert all(torch.count_nonzero(gz[0, t]) > 0 for t in (0, 1, 3))
    assert m["clipfrac"].item() == pytest.approx(0.25)


# ----------------------------------------------------------------------------- KL, DFT, iw-SFT


@pytest.mark.parametrize("kind", ["k1", "k2", "k3", "low_var_kl"])
def test_kl_estimators_values_and_gradients(kind):
    logp = [[-1.0, -0.2, -3.0, -30.0], [-0.5, -5.0, -0.01, -2.0]]
    ref = [[-1.5, -0.1, -3.0, -1.0], [-40.0, -1.0, -0.5, -2.2]]
    x = t64(logp, grad=True)
    out = L.kl_penalty(x, t64(ref), kind)
    vals, grads = [], []
    for lr, rr in zip(logp, ref, strict=True):
        vrow, grow = [], []
        for a, b in zip(lr, rr, strict=True):
            if kind == "k1":
                v, gr = a - b, 1.0
            elif kind == "k2":
                v, gr = 0.5 * (a - b) ** 2, a - b
            else:
                d = max(-20.0, min(20.0, b - a))
                v = math.exp(d) - d - 1
                gr = -(math.exp(d) - 1) if -20 < b - a < 20 else 0.0  # dd/da = −1 inside the clamp
                if not -10 <= v <= 10:
                    v, gr = max(-10.0, min(10.0, v)), 0.0
            vrow.append(v)
            grow.append(gr)
        vals.append(vrow)
        grads.append(grow)
    assert_close(out.tolist(), vals)
    assert_close(grad_of(out.sum(), x), grads)
    if kind in ("k3", "low_var_kl"):
        assert (out >= 0).all() and out.max() <= 10


def test_sft_kl_adds_beta_times_the_token_mean_kl():
    x = t64(LOGP, grad=True)
    ref = [[-1.2, -1.0, -1.0, -2.0], [-0.3, -2.0, -2.5, -1.0]]
    loss, m = L.sft_kl_loss(x, t64(ref), torch.tensor(MASK), coef=0.5, kind="k1")
    ce = ref_agg([[-v for v in r] for r in LOGP], MASK, "token-mean")
    kl = ref_agg(
        [[a - b for a, b in zip(p, q, strict=True)] for p, q in zip(LOGP, ref, strict=True)],
        MASK,
        "token-mean",
    )
    assert loss.item() == pytest.approx(ce + 0.5 * kl)
    assert m["kl"].item() == pytest.approx(kl)
    # d/dlogp = (−1 + β) / N on response tokens
    assert_close(grad_of(loss, x), [[m_ * (-0.5) / 7 for m_ in r] for r in MASK])
    with pytest.raises(ValueError):
        L.kl_penalty(x, x, "k4")


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_dft_value_and_gradient_wrt_logp(mode):
    x = t64(LOGP, grad=True)
    out = L.dft_loss(x, torch.tensor(MASK), mode)
    c = ref_weights(MASK, mode)
    assert out.item() == pytest.approx(
        ref_agg([[math.exp(v) * -v for v in r] for r in LOGP], MASK, mode)
    )
    # stop-gradient on p: d/dlogp = −p·c, not −(p + p·logp)·c
    expected = [
        [-math.exp(v) * ci for v, ci in zip(r, cr, strict=True)]
        for r, cr in zip(LOGP, c, strict=True)
    ]
    assert_close(grad_of(out, x), expected)


def test_dft_gradient_wrt_logits_is_p_times_softmax_minus_onehot_over_n():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 13, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 13, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]])
    (gz,) = torch.autograd.grad(L.dft_loss(L.token_logprobs(logits, labels), mask), logits)
    n = int(mask.sum())
    for b in range(2):
        for t in range(5):
            z = logits[b, t].detach().tolist()
            mx = max(z)
            e = [math.exp(v - mx) for v in z]
            soft = [v / sum(e) for v in e]
            p = soft[labels[b, t]]
            want = [
                mask[b, t].item() * p * (s - (1.0 if v == labels[b, t] else 0.0)) / n
                for v, s in enumerate(soft)
            ]
            assert_close(gz[b, t].tolist(), want, 1e-12)


def test_plain_ce_for_logging_is_sft_loss_on_detached_logp():
    x = t64(LOGP)
    assert L.sft_loss(x, torch.tensor(MASK)).item() == pytest.approx(
        sum(-v for r, mr in zip(LOGP, MASK, strict=True) for v, m in zip(r, mr, strict=True) if m)
        / 7
    )


@pytest.mark.parametrize("mode", L.AGG_MODES)
@pytest.mark.parametrize("level", ["sequence", "token"])
def test_iwsft_both_levels(level, mode):
    logp = [[-0.5, -1.0, -2.0, 9.0], [-0.1, -0.2, -0.3, -0.4], [-3.0, -1.0, 0.0, 0.0]]
    ref = [[-1.5, -1.2, 0.0, 0.0], [-2.1, -9.2, -0.3, -0.9], [-1.0, -2.0, 0.0, 0.0]]
    mask = [[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    x = t64(logp, grad=True)
    loss, m = L.iwsft_loss(x, t64(ref), torch.tensor(mask), level=level, agg=mode)
    c = ref_weights(mask, mode)
    weights = []
    for lr, rr, mr in zip(logp, ref, mask, strict=True):
        if level == "sequence":
            n = sum(mr)
            mean = sum(a - b for a, b, k in zip(lr, rr, mr, strict=True) if k) / n if n else 0.0
            weights.append([min(16.0, max(0.0, math.exp(mean)))] * len(lr))
        else:
            weights.append(
                [min(1.8, max(0.2, math.exp(a - b))) for a, b in zip(lr, rr, strict=True)]
            )
    want = sum(
        ci * w * -v
        for cr, wr, lr in zip(c, weights, logp, strict=True)
        for ci, w, v in zip(cr, wr, lr, strict=True)
    )
    assert loss.item() == pytest.approx(want, abs=1e-12)
    assert_close(
        grad_of(loss, x),
        [
            [-ci * w for ci, w in zip(cr, wr, strict=True)]
            for cr, wr in zip(c, weights, strict=True)
        ],
    )
    if level == "sequence":
        assert m["iw_weight"].item() == pytest.approx((weights[0][0] + weights[1][0]) / 2)
        assert weights[1][0] == 16.0  # the clip binds on row 1
    else:
        flat = [
            w
            for wr, mr in zip(weights, mask, strict=True)
            for w, k in zip(wr, mr, strict=True)
            if k
        ]
        assert m["iw_weight"].item() == pytest.approx(sum(flat) / len(flat))
        assert 1.8 in flat and 0.2 in flat


def test_iwsft_custom_clip():
    x = t64([[0.0, 0.0]], grad=True)
    _, m = L.iwsft_loss(
        x - 5, t64([[0.0, 0.0]]), torch.ones(1, 2), level="sequence", weight_clip=(0.5, 2.0)
    )
    assert m["iw_weight"].item() == 0.5


# ----------------------------------------------------------------------------- log-probs, entropy


def test_token_logprobs_and_entropy_against_float64_reference():
    g = torch.Generator().manual_seed(4)
    logits32 = torch.randn(2, 3, 17, generator=g) * 4
    labels = torch.randint(0, 17, (2, 3), generator=g)
    lp = L.token_logprobs(logits32, labels)
    ent = L.token_entropy(logits32)
    assert lp.dtype == torch.float32 and lp.shape == (2, 3) and ent.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            z = [float(v) for v in logits32[b, t].tolist()]
            mx = max(z)
            lse = mx + math.log(sum(math.exp(v - mx) for v in z))
            assert lp[b, t].item() == pytest.approx(z[labels[b, t]] - lse, abs=1e-5)
            h = -sum(math.exp(v - lse) * (v - lse) for v in z)
            assert ent[b, t].item() == pytest.approx(h, abs=1e-5)
    # bf16 logits are upcast before the log-softmax
    assert L.token_logprobs(logits32.bfloat16(), labels).dtype == torch.float32
    # uniform distribution: entropy log V
    assert L.token_entropy(torch.zeros(5, 17)).tolist() == pytest.approx([math.log(17)] * 5)
    # ignore index −100 does not crash
    assert torch.isfinite(L.token_logprobs(logits32, torch.full((2, 3), -100))).all()


def test_top_entropy_mask():
    ent = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.8, 0.2, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    out = L.top_entropy_mask(ent, mask, 0.3)  # ceil(0.3 · 7) = 3 of 7; 5.0 is masked out
    assert out.tolist() == [[0, 1, 0, 1], [0, 1, 0, 0]]
