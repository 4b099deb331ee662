"""Nucleus sampling as evals.generate does it (the most probable candidates first, a full sort
only for rows whose nucleus is wider) draws from the same distribution as the textbook
definition: sort the vocabulary, keep a token while the tokens before it hold less than top_p."""

from __future__ import annotations

import torch

from psft_orchestrator.evals.generate import NUCLEUS_CANDIDATES, SamplingParams, next_token


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The textbook nucleus distribution of one row, written independently of the code."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    out = torch.zeros_like(probs)
    mass = 0.0
    for i in probs.argsort(descending=True).tolist():
        if mass >= top_p:
            break
        out[i] = probs[i]
        mass += float(probs[i])
    return out / out.sum()


def test_nucleus_sampling_matches_the_textbook_distribution():
    torch.manual_seed(0)
    vocab = 3 * NUCLEUS_CANDIDATES
    peaked = torch.randn(vocab) * 4  # nucleus inside the candidates
    flat = torch.randn(vocab) * 0.1  # nucleus wider than the candidates: the full-sort path
    params = SamplingParams(temperature=0.7, top_p=0.9)
    draws = 40_000
    for logits in (peaked, flat):
        expected = nucleus_probs(logits, params.temperature, params.top_p)
        torch.manual_seed(1)
        tokens = next_token(logits.expand(draws, vocab), params)
        seen = torch.bincount(tokens, minlength=vocab).double() / draws
        assert seen[expected == 0].sum() == 0  # never a token outside the nucleus
        assert (seen - expected).abs().max() < 0.01  # ~4 standard errors at 40k draws
    assert int((nucleus_probs(peaked, 0.7, 0.9) > 0).sum()) < NUCLEUS_CANDIDATES
    assert int((nucleus_probs(flat, 0.7, 0.9) > 0).sum()) > NUCLEUS_CANDIDATES


def test_greedy_is_the_argmax_and_sampling_is_seeded():
    logits = torch.randn(8, 50)
    assert torch.equal(next_token(logits, SamplingParams(temperature=0)), logits.argmax(-1))
    params = SamplingParams(temperature=1.0, top_p=0.95)
    torch.manual_seed(3)
    first = next_token(logits, params)
    torch.manual_seed(3)
    assert torch.equal(next_token(logits, params), first)
