"""Judged suite (AlpacaEval / MT-Bench / Arena-Hard stand-in): generate answers, grade with a judge.

Two judges share one interface:
    score(prompt, answer) -> float in [0, 10] (NaN when a model judge's output has no rating)
    compare(prompt, answer, reference) -> "win" | "tie" | "loss"  (answer vs reference)

`RuleJudge` grades the toy world with each benchmark row's own `answer` / `checks`, so a judged
run is exact and fast on CPU. `ModelJudge` prompts a local HF model with a fixed rubric and parses
"Rating: [[x]]" / "[[A]]|[[B]]|[[C]]", MT-Bench style; pairwise verdicts are asked in both orders
and only a consistent preference counts as a win or a loss (position-bias guard).

Reported: `score` (mean rating x 10, so 0-100), `win_rate` (wins + ties/2, percent) when reference
answers exist, and `unparsed` (percent of model-judge outputs without a rating).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, Protocol

from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.evals.config import JudgeSuite
from psft_orchestrator.evals.generate import (
    SamplingParams,
    as_messages,
    generate,
    load_model,
    sampling_params,
)
from psft_orchestrator.evals.records import SampleWriter, mean_score, prompt_text, read_benchmark

Outcome = Literal["win", "tie", "loss"]

PAIRWISE_RUBRIC = (
    "Please act as an impartial judge and evaluate the responses provided by two AI assistants to "
    "the user question displayed below. Choose the assistant that follows the user's instructions "
    "and answers the question better. Do not let the order or length of the responses influence you. "
    'After a short explanation, output your final verdict strictly as "[[A]]" if assistant A is '
    'better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)

_RATING = re.compile(
    r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]|rating\s*[:=]?\s*(\d+(?:\.\d+)?)(?:\s*/\s*10)?", re.IGNORECASE
)
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def parse_score(text: str) -> float | None:
    """The last rating in a judge's output ("Rating: [[7]]", "[[7.5]]", "Rating: 8/10"), clipped to
    [0, 10]; None when there is none."""
    matches = list(_RATING.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    value = float(m.group(1) or m.group(2))
    return min(max(value, 0.0), 10.0)


def parse_verdict(text: str) -> Outcome | None:
    """The last "[[A]]" / "[[B]]" / "[[C]]" of a pairwise judgement, from assistant A's side."""
    matches = _VERDICT.findall(text)
    if not matches:
        return None
    return {"A": "win", "B": "loss", "C": "tie"}[matches[-1]]


class Judge(Protocol):
    def score(self, prompt: str, answer: str) -> float: ...

    def compare(self, prompt: str, answer: str, reference: str) -> Outcome: ...


def _outcome(a: float, b: float) -> Outcome:
    return "win" if a > b else "loss" if a < b else "tie"


def _grading_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What `RuleJudge.score` reads from a row: its checks, or else its answer and choices."""
    if row.get("checks"):
        return ("checks", row["checks"])
    return ("answer", row.get("answer"), row.get("choices"))


class RuleJudge:
    """Grades by the benchmark row whose prompt matches: exact / multiple-choice answer -> 0 or 10;
    `checks` -> 10 x the fraction of instructions followed (strictly)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows: dict[str, dict[str, Any]] = {}
        for r in rows:
            key = prompt_text(r["prompt"])
            old = self.rows.setdefault(key, r)
            # Two rows may share a prompt (toy benchmarks are sampled); that is only ambiguous
            # when they would be graded differently. A row with `checks` is graded by its checks
            # alone, so its reference `answer` may differ freely.
            if _grading_key(old) != _grading_key(r):
                raise ValueError(
                    f"rule judge: prompt {key!r} appears twice with different grading rules"
                )

    def score(self, prompt: str, answer: str) -> float:
        from psft_orchestrator.evals.exact import grade

        row = self.rows[prompt]
        if row.get("checks"):
            from psft_orchestrator.data.toy.checks import follows

            return 10.0 * sum(follows(answer, c) for c in row["checks"]) / len(row["checks"])
        if "answer" in row:
            return 10.0 * grade(answer, row["answer"], row.get("choices"))
        raise ValueError("rule judge: a row needs `checks` or `answer`")

    def compare(self, prompt: str, answer: str, reference: str) -> Outcome:
        return _outcome(self.score(prompt, answer), self.score(prompt, reference))


class ModelJudge:
    """A local HF model as judge (greedy decoding, fixed rubric prompts)."""

    def __init__(
        self,
        model_dir: str | Path,
        rubric: str,
        max_new_tokens: int = 512,
        model: Any = None,
        tokenizer: Any = None,
    ):
        if model is None:
            model, tokenizer = load_model(model_dir)
        self.model, self.tokenizer, self.rubric = model, tokenizer, rubric
        self.params = SamplingParams(
            k=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=1
        )
        self.last_output = ""

    def _ask(self, system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        self.last_output = generate(self.model, self.tokenizer, [messages], self.params)[0][0]
        return self.last_output

    def score(self, prompt: str, answer: str) -> float:
        text = self._ask(
            self.rubric,
            f"[Question]\n{prompt}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
        )
        value = parse_score(text)
        return math.nan if value is None else value

    def _pairwise(self, prompt: str, a: str, b: str) -> Outcome | None:
        return parse_verdict(
            self._ask(
                PAIRWISE_RUBRIC,
                f"[User Question]\n{prompt}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]"
                f"\n\n[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]",
            )
        )

    def compare(self, prompt: str, answer: str, reference: str) -> Outcome:
        first = self._pairwise(prompt, answer, reference)
        swapped = self._pairwise(prompt, reference, answer)
        second = {"win": "loss", "loss": "win", "tie": "tie", None: None}[swapped]
        return first if first == second and first is not None else "tie"


def make_judge(suite: JudgeSuite, rows: list[dict[str, Any]]) -> Judge:
    if suite.judge == "rules":
        return RuleJudge(rows)
    return ModelJudge(suite.judge, suite.rubric, suite.judge_max_new_tokens)


def run_judge_suite(
    model: Any,
    tokenizer: Any,
    suite: JudgeSuite,
    benchmarks: dict[str, str | Path],
    step: int | None = None,
    samples: SampleWriter | None = None,
) -> list[ScoreRow]:
    samples = samples or SampleWriter(None)
    references: dict[str, str] = {}
    if suite.reference is not None:
        references = {
            prompt_text(r["prompt"]): str(r["answer"])
            for r in read_benchmark(benchmarks[suite.reference])
        }
    scores: list[ScoreRow] = []
    model_judge: Judge | None = None
    for name in suite.benchmarks:
        rows = read_benchmark(benchmarks[name], suite.limit)
        if suite.judge == "rules":
            judge: Judge = RuleJudge(rows)
        else:  # one model judge for all benchmarks
            model_judge = model_judge or make_judge(suite, rows)
            judge = model_judge
        prompts = [as_messages(r["prompt"], suite.system_prompt) for r in rows]
        completions = generate(model, tokenizer, prompts, sampling_params(suite))
        ratings: list[float] = []
        outcomes: list[float] = []
        unparsed: list[float] = []
        records = []
        for i, (row, outs) in enumerate(zip(rows, completions, strict=True)):
            question = prompt_text(row["prompt"])
            reference = references.get(question, row.get("reference"))
            row_ratings, row_outcomes = [], []
            for j, text in enumerate(outs):
                rating = judge.score(question, text)
                outcome = (
                    judge.compare(question, text, str(reference)) if reference is not None else None
                )
                row_ratings.append(rating)
                if outcome is not None:
                    row_outcomes.append({"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome])
                records.append(
                    {
                        "suite": suite.label,
                        "index": i,
                        "sample": j,
                        "step": step,
                        "prompt": prompts[i],
                        "completion": text,
                        "rating": rating,
                        "reference": reference,
                        "outcome": outcome,
                    }
                )
            parsed = [r for r in row_ratings if not math.isnan(r)]
            unparsed.append(1.0 - len(parsed) / len(row_ratings))
            if parsed:
                ratings.append(sum(parsed) / len(parsed) / 10.0)
            if row_outcomes:
                outcomes.append(sum(row_outcomes) / len(row_outcomes))
        samples.write(name, records)
        scores.append(mean_score(suite.label, name, "score", ratings, step))
        if outcomes:
            scores.append(mean_score(suite.label, name, "win_rate", outcomes, step))
        if suite.judge != "rules":
            scores.append(mean_score(suite.label, name, "unparsed", unparsed, step))
    return scores
