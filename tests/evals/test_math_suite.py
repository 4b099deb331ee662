import json

import pytest

from psft_orchestrator.configs.evals import MathSuite
from psft_orchestrator.evals.generate import SamplingParams, as_messages, generate, load_model
from psft_orchestrator.evals.math import math_scores, run_math_suite
from psft_orchestrator.evals.records import SampleWriter


def _by_metric(scores):
    return {s.metric: s for s in scores}


def test_math_scores_from_verdicts():
    got = _by_metric(
        math_scores("math", "b", [[True, False, False, False], [False] * 4, [True] * 4])
    )
    assert got["avg@4"].value == pytest.approx((25 + 0 + 100) / 3)
    assert got["pass@4"].value == pytest.approx(200 / 3)
    assert got["avg@4"].n == 3


def test_avg_at_k_on_the_parrot(parrot, math_bench, tmp_path):
    """The parrot always answers \\boxed{5}: right on "5" and "\\frac{10}{2}", wrong on "7"."""
    model, tok = parrot
    suite = MathSuite(benchmarks=["toy_math"], k=4, max_new_tokens=16, batch_size=6)
    scores = _by_metric(
        run_math_suite(
            model,
            tok,
            suite,
            {"toy_math": math_bench},
            step=3,
            samples=SampleWriter(tmp_path / "samples"),
        )
    )
    assert scores["avg@4"].value == scores["pass@4"].value == pytest.approx(200 / 3)
    assert (scores["avg@4"].n, scores["avg@4"].step, scores["avg@4"].suite) == (3, 3, "math")

    records = [
        json.loads(line)
        for line in (tmp_path / "samples" / "toy_math.jsonl").read_text().splitlines()
    ]
    assert len(records) == 12
    assert {r["extracted"] for r in records} == {"5"}
    assert [r["correct"] for r in records if r["sample"] == 0] == [True, True, False]
    assert records[0]["prompt"][0]["content"] == suite.system_prompt


def test_sampling_is_reproducible_per_seed(micro_model):
    """Random weights give varied gibberish: same seed -> same completions, other seed -> others."""
    model, tok = load_model(micro_model)
    prompts = [as_messages("What is 2 plus 3?"), as_messages("How many apples?")]
    params = SamplingParams(k=3, max_new_tokens=12, seed=7, batch_size=4)
    first = generate(model, tok, prompts, params)
    assert generate(model, tok, prompts, params) == first
    assert (
        generate(model, tok, prompts, SamplingParams(k=3, max_new_tokens=12, seed=8, batch_size=4))
        != first
    )
    assert len(first) == 2 and all(len(c) == 3 for c in first)
    assert len({c for cs in first for c in cs}) > 1  # k samples differ


def test_greedy_batched_equals_one_at_a_time(parrot):
    model, tok = parrot
    prompts = [
        as_messages("What is 2 plus 3?"),
        as_messages("Sort the digits of 321, please, now."),
    ]
    batched = generate(
        model, tok, prompts, SamplingParams(k=1, temperature=0, max_new_tokens=16, batch_size=8)
    )
    single = generate(
        model, tok, prompts, SamplingParams(k=1, temperature=0, max_new_tokens=16, batch_size=1)
    )
    assert batched == single == [["The answer is \\boxed{5}."]] * 2


def test_new_tokens_are_capped_by_the_model_positions(parrot):
    from psft_orchestrator.evals.generate import _room

    model, _ = (
        parrot  # toy models have 1024 positions; the paper's 10,240-token cap must not crash them
    )
    assert _room(model, 1000, SamplingParams(max_new_tokens=10240)) == 24
    assert _room(model, 10, SamplingParams(max_new_tokens=16)) == 16
    with pytest.raises(ValueError, match="positions"):
        _room(model, 1024, SamplingParams())


def test_new_path_gives_the_reference_paths_greedy_outputs(micro_model, parrot):
    """Length-grouped batches, the plain decode loop and dropping finished rows change speed,
    not outputs: greedy completions equal HF generate's, prompt by prompt, in prompt order."""
    from psft_orchestrator.evals.generate import generate_reference

    prompts = [as_messages("x " * n + "What is 2 plus 3?") for n in (9, 0, 4, 17, 1, 6)]
    for model, tok in (load_model(micro_model), parrot):  # runs to the cap / stops early
        for k, batch_size in ((1, 4), (2, 5), (2, 64)):
            params = SamplingParams(k=k, temperature=0, max_new_tokens=10, batch_size=batch_size)
            new = generate(model, tok, prompts, params)
            assert new == generate_reference(model, tok, prompts, params)
            assert len(new) == len(prompts) and all(len(c) == k for c in new)
