import math

import pytest

from psft_orchestrator.configs.evals import JudgeSuite, RulesSuite
from psft_orchestrator.evals.judge import parse_score, parse_verdict, run_judge_suite
from psft_orchestrator.evals.judges import HFChat, LLMJudge, PairItem, RateItem, RuleJudge
from psft_orchestrator.evals.rules import run_rules_suite
from psft_orchestrator.results.coverage import SUITE_METRICS

from .conftest import write_jsonl

# The parrot answers "The answer is \boxed{5}." to everything.
RULE_ROWS = [
    {
        "prompt": "Say hi.",
        "task": "ifeval",
        "checks": [{"type": "ends_with", "value": "."}],
    },  # strict, loose
    {
        "prompt": "Say hi.",
        "task": "ifeval",
        "checks": [{"type": "contains", "value": "answer"}, {"type": "uppercase"}],
    },  # neither
    {
        "prompt": "Say hi.",
        "task": "ifeval",
        "checks": [{"type": "word_count", "value": 5}],
    },  # strict ("boxed" counts as a word)
    {"prompt": "What is 2 plus 3?", "task": "exact", "answer": "5"},  # boxed 5: right
    {"prompt": "Reverse cat.", "task": "exact", "answer": "tac"},  # wrong
    {
        "prompt": "Which? A. 1 B. 5",
        "task": "mc",
        "answer": "B",
        "choices": ["A", "B"],
    },  # no letter: wrong
]


def test_rules_suite_on_the_parrot(parrot, tmp_path):
    model, tok = parrot
    bench = write_jsonl(tmp_path / "rules.jsonl", RULE_ROWS)
    suite = RulesSuite(benchmarks=["toy_if"], k=2, max_new_tokens=16)
    scores = {s.metric: s for s in run_rules_suite(model, tok, suite, {"toy_if": bench})}
    assert scores["strict_acc"].value == pytest.approx(200 / 3) and scores["strict_acc"].n == 3
    assert scores["loose_acc"].value == pytest.approx(200 / 3)
    assert scores["exact_match"].value == pytest.approx(100 / 3) and scores["exact_match"].n == 3
    # --plan's table check predicts a rules suite's metrics by these names (results/coverage.py)
    assert set(scores) == set(SUITE_METRICS["rules"])


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Good answer. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("I'd say Rating: 6/10", 6.0),
        ("[[3]] at first, but on reflection Rating: [[4]]", 4.0),
        ("Rating: [[12]]", 10.0),
        ("no number here", None),
        ("", None),
    ],
)
def test_parse_score(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("A is clearly better. [[A]]", 1.0),
        ("[[B]]", 0.0),
        ("[[ C ]]", 0.5),
        ("[[A]]... no wait, [[B]]", 0.0),
        ("A is better", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_rule_judge_rates_and_compares_by_each_items_rule():
    judge = RuleJudge()
    exact, shape = {"answer": "5"}, {"checks": [{"type": "uppercase"}]}
    rated = judge.rate(
        [
            RateItem("What is 2 plus 3?", "\\boxed{5}", grading=exact),
            RateItem("What is 2 plus 3?", "6", grading=exact),
            # the same prompt with another rule: each item is graded by its own row
            RateItem("What is 2 plus 3?", "FIVE", grading=shape),
        ]
    )
    assert [v.value for v in rated] == [10.0, 0.0, 10.0]
    pairs = [
        PairItem("q", "5", "6", exact),
        PairItem("q", "6", "5", exact),
        PairItem("q", "5", "5", exact),
    ]
    assert [v.value for v in judge.compare(pairs)] == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="needs `checks` or `answer`"):
        judge.rate([RateItem("q", "a")])


def test_judge_suite_with_rule_grader(parrot, tmp_path):
    model, tok = parrot
    bench = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"prompt": "What is 2 plus 3?", "task": "chat", "answer": "5"},
            {"prompt": "How many apples?", "task": "chat", "answer": "7"},
            {
                "prompt": "Say hi.",
                "task": "chat",
                "checks": [{"type": "ends_with", "value": "."}, {"type": "lowercase"}],
            },
        ],
    )
    refs = write_jsonl(
        tmp_path / "refs.jsonl",
        [  # the reference model: wrong, right, follows both checks
            {"prompt": "What is 2 plus 3?", "answer": "4"},
            {"prompt": "How many apples?", "answer": "7"},
            {"prompt": "Say hi.", "answer": "hi."},
        ],
    )
    suite = JudgeSuite(benchmarks=["alpaca"], reference="refs", max_new_tokens=16)
    scores = {
        s.metric: s for s in run_judge_suite(model, tok, suite, {"alpaca": bench, "refs": refs})
    }
    # parrot ratings: 10, 0, 5 (one of two checks) -> mean 5/10 -> 50 %; vs reference: win, loss, loss.
    assert scores["score"].value == pytest.approx(50.0)
    assert scores["win_rate"].value == pytest.approx(100 / 3)
    assert "unparsed" not in scores


def test_model_judge_runs_on_a_tiny_model(micro_model):
    """A random model's judgements are meaningless, but the loop must run and yield a rating or
    NaN, with the prompt and reply kept for the audit trail."""
    judge = LLMJudge(HFChat(micro_model, max_new_tokens=8), rubric="Rate the answer.")
    (rated,) = judge.rate([RateItem("What is 2 plus 3?", "5")])
    assert math.isnan(rated.value) or 0.0 <= rated.value <= 10.0
    assert isinstance(rated.reply, str) and rated.prompt[0]["content"] == "Rate the answer."
    (pair,) = judge.compare([PairItem("What is 2 plus 3?", "5", "4")])
    assert math.isnan(pair.value) or pair.value in (0.0, 0.5, 1.0)
