"""The judged protocols (MT-Bench, Arena-Hard, AlpacaEval) on the parrot with the rule judge:
known answers, so known numbers; and the prompts an LLM judge would see."""

from __future__ import annotations

import json

import pytest

from psft_orchestrator.configs.evals import JudgeSuite
from psft_orchestrator.evals.judge import run_judge_suite
from psft_orchestrator.evals.judges import LLMJudge, RateItem
from psft_orchestrator.evals.records import SampleWriter

from .conftest import PARROT_ANSWER, write_jsonl

DOT = [{"type": "ends_with", "value": "."}]
UPPER = [{"type": "uppercase"}]


def _run(parrot, tmp_path, protocol, rows, refs=None, **kw):
    model, tok = parrot
    files = {"bench": write_jsonl(tmp_path / "bench.jsonl", rows)}
    if refs is not None:
        files["refs"] = write_jsonl(tmp_path / "refs.jsonl", refs)
    suite = JudgeSuite(
        benchmarks=["bench"],
        reference="refs" if refs is not None else None,
        protocol=protocol,
        max_new_tokens=16,
        temperature=0.0,
        **kw,
    )
    samples = SampleWriter(tmp_path / "samples")
    scores = run_judge_suite(model, tok, suite, files, samples=samples)
    records = [
        json.loads(x) for x in (tmp_path / "samples" / "bench.jsonl").read_text().splitlines()
    ]
    return {s.metric: s for s in scores}, records


def test_mt_bench_turn_two_carries_turn_one(parrot, tmp_path):
    rows = [
        {"prompt": ["What is 2 plus 3?", "Now say it in uppercase."], "turn_checks": [DOT, UPPER]},
        {
            "prompt": [{"role": "user", "content": "How many apples?"}],
            "turns": ["How many apples?", "End."],
            "turn_checks": [DOT, DOT],
        },
    ]
    scores, records = _run(parrot, tmp_path, "mt_bench", rows)
    assert scores["turn1"].value == pytest.approx(10.0)  # the parrot's answer ends with "."
    assert 0.0 <= scores["turn2"].value <= 10.0 and scores["turn2"].n == 2
    rec = records[0]
    assert rec["completion"] == PARROT_ANSWER
    roles = [m["role"] for m in rec["turn2_prompt"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert rec["turn2_prompt"][1]["content"] == "What is 2 plus 3?"
    assert rec["turn2_prompt"][2]["content"] == PARROT_ANSWER  # the model's own turn-1 answer
    assert rec["turn2_prompt"][3]["content"] == "Now say it in uppercase."
    assert scores["turn1"].protocol["protocol"] == "mt_bench"
    assert scores["turn1"].protocol["judge"] == {"kind": "rules"}


def test_mt_bench_judge_prompt_for_turn_two_shows_the_conversation():
    judge = LLMJudge(lambda prompts: ["Rating: [[6]]"] * len(prompts), rubric="R")
    history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    (v,) = judge.rate([RateItem("Q2", "A2", history)])
    text = v.prompt[1]["content"]
    assert v.value == 6.0 and "second user question" in v.prompt[0]["content"]
    order = [
        text.index(s)
        for s in ("### User:\nQ1", "### Assistant A:\nA1", "### User:\nQ2", "### Assistant A:\nA2")
    ]
    assert order == sorted(order)


def test_mt_bench_needs_a_second_turn(parrot, tmp_path):
    with pytest.raises(ValueError, match="no second turn"):
        _run(parrot, tmp_path, "mt_bench", [{"prompt": "Say hi.", "checks": DOT}])


def test_arena_hard_counts_both_orders(parrot, tmp_path):
    rows = [
        {"prompt": "What is 2 plus 3?", "answer": "5"},
        {"prompt": "How many apples?", "answer": "7"},
    ]
    refs = [
        {"prompt": "What is 2 plus 3?", "answer": "4"},
        {"prompt": "How many apples?", "answer": "7"},
    ]
    scores, records = _run(parrot, tmp_path, "arena_hard", rows, refs)
    # the parrot (always 5) beats a wrong baseline in both orders and loses to a right one
    assert scores["win_rate"].value == pytest.approx(50.0) and scores["win_rate"].n == 2
    assert [(r["outcome_model_first"], r["outcome_model_second"]) for r in records] == [
        (1.0, 1.0),
        (0.0, 0.0),
    ]


def test_alpaca_eval_win_rate_and_lc(parrot, tmp_path):
    questions = ["What is 2 plus 3?", "How many apples?", "Sort the digits of 321.", "Reverse cat."]
    rows = [
        {"prompt": q, "answer": "5", "reference": "4" if i % 2 else "\\boxed{5} " * (i + 1)}
        for i, q in enumerate(questions * 2)
    ]
    scores, _ = _run(parrot, tmp_path, "alpaca_eval", rows)
    # odd rows: the reference is wrong (win); even rows: both right (tie)
    assert scores["win_rate"].value == pytest.approx(75.0)
    assert 0.0 <= scores["lc_win_rate"].value <= 100.0 and scores["lc_win_rate"].n == 8


def test_pairwise_protocols_need_references(parrot, tmp_path):
    with pytest.raises(ValueError, match="no reference"):
        _run(parrot, tmp_path, "arena_hard", [{"prompt": "Say hi.", "answer": "hi"}])
