"""Judges: who grades an answer. The judged protocols (evals/judge.py) only see this interface:

    judge.rate(items)    -> [Verdict]   single-answer grading, value = rating in [1, 10]
    judge.compare(items) -> [Verdict]   pairwise, value = 1 (A better), 0.5 (tie), 0 (B better)

A verdict carries the judge's prompt and reply, so every number can be audited per sample;
value is NaN when an LLM judge's reply holds no rating/verdict.

- `RuleJudge`: the toy world's exact grader (each item's own `checks` / `answer`): fast, exact.
- `LLMJudge(chat)`: MT-Bench / Arena-Hard style rubric prompts, "[[rating]]" / "[[A]]" parsing,
  over any chat function: a local HF model (`HFChat`) or an OpenAI-compatible server
  (`evals.judge_api.ApiChat`, e.g. `vllm serve` or a hosted API).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Messages = list[dict[str, str]]
ChatFn = Callable[[list[Messages]], list[str]]

PAIRWISE_RUBRIC = (
    "Please act as an impartial judge and evaluate the responses provided by two AI assistants to "
    "the user question displayed below. Choose the assistant that follows the user's instructions "
    "and answers the question better. Do not let the order or length of the responses influence you. "
    'After a short explanation, output your final verdict strictly as "[[A]]" if assistant A is '
    'better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
MULTI_TURN_RUBRIC = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should focus on the "
    "assistant's answer to the second user question. Be as objective as possible. After a short "
    'explanation, rate the response on a scale of 1 to 10 by strictly following this format: "Rating: [[5]]".'
)
# What a constrained (guided) judge may output: exactly one verdict in the parsed format.
RATING_REGEX = r"Rating: \[\[([1-9]|10)\]\]"
VERDICT_REGEX = r"\[\[[ABC]\]\]"

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
    return min(max(float(m.group(1) or m.group(2)), 0.0), 10.0)


def parse_verdict(text: str) -> float | None:
    """The last "[[A]]" / "[[B]]" / "[[C]]" as A's share of the win: 1, 0 or 0.5."""
    matches = _VERDICT.findall(text)
    return {"A": 1.0, "B": 0.0, "C": 0.5}[matches[-1]] if matches else None


@dataclass
class RateItem:
    """One answer to grade. `history` holds the earlier turns (user, assistant, ...) when the
    answer is to a follow-up question; `grading` is the benchmark row's rule (checks/answer)."""

    question: str
    answer: str
    history: Messages = field(default_factory=list)
    grading: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairItem:
    question: str
    answer_a: str
    answer_b: str
    grading: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    value: float  # NaN = the judge gave no parseable verdict
    prompt: Messages | None = None
    reply: str | None = None


class Judge(Protocol):
    def rate(self, items: list[RateItem]) -> list[Verdict]: ...

    def compare(self, items: list[PairItem]) -> list[Verdict]: ...


class RuleJudge:
    """Grades with each item's benchmark rule: `checks` -> 10 x the fraction of instructions
    followed (strictly); `answer` (+ `choices`) -> 10 if correct else 0. Pairwise: the higher
    rule score wins."""

    def _score(self, answer: str, grading: dict[str, Any]) -> float:
        from psft_orchestrator.evals.exact import grade

        if grading.get("checks"):
            from psft_orchestrator.data.toy.checks import follows

            checks = grading["checks"]
            return 10.0 * sum(follows(answer, c) for c in checks) / len(checks)
        if "answer" in grading:
            return 10.0 * grade(answer, grading["answer"], grading.get("choices"))
        raise ValueError("rule judge: a benchmark row needs `checks` or `answer`")

    def rate(self, items: list[RateItem]) -> list[Verdict]:
        return [Verdict(self._score(it.answer, it.grading)) for it in items]

    def compare(self, items: list[PairItem]) -> list[Verdict]:
        out = []
        for it in items:
            a, b = self._score(it.answer_a, it.grading), self._score(it.answer_b, it.grading)
            out.append(Verdict(1.0 if a > b else 0.0 if a < b else 0.5))
        return out


class LLMJudge:
    """Rubric prompts to a chat model; the last "[[x]]" of its reply is the verdict."""

    def __init__(self, chat: ChatFn, rubric: str, guided: bool = False):
        # guided: the chat function takes a regex its replies must match (vLLM structured outputs)
        self.chat, self.rubric, self.guided = chat, rubric, guided

    def _ask(self, prompts: list[Messages], regex: str) -> list[str]:
        return self.chat(prompts, regex) if self.guided else self.chat(prompts)  # type: ignore[call-arg]

    def rate(self, items: list[RateItem]) -> list[Verdict]:
        prompts = [self.rating_prompt(it) for it in items]
        replies = self._ask(prompts, RATING_REGEX)
        return [_verdict(parse_score(r), p, r) for p, r in zip(prompts, replies, strict=True)]

    def compare(self, items: list[PairItem]) -> list[Verdict]:
        prompts = [self.pairwise_prompt(it) for it in items]
        replies = self._ask(prompts, VERDICT_REGEX)
        return [_verdict(parse_verdict(r), p, r) for p, r in zip(prompts, replies, strict=True)]

    def rating_prompt(self, item: RateItem) -> Messages:
        if not item.history:
            user = (
                f"[Question]\n{item.question}\n\n[The Start of Assistant's Answer]\n{item.answer}\n"
                "[The End of Assistant's Answer]"
            )
            return [{"role": "system", "content": self.rubric}, {"role": "user", "content": user}]
        # MT-Bench's multi-turn template: the whole conversation, graded on the last answer.
        turns = [*item.history, {"role": "user", "content": item.question}]
        turns.append({"role": "assistant", "content": item.answer})
        lines = ["<|The Start of Assistant A's Conversation with User|>"]
        for m in turns:
            who = "User" if m["role"] == "user" else "Assistant A"
            lines.append(f"\n### {who}:\n{m['content']}")
        lines.append("\n<|The End of Assistant A's Conversation with User|>")
        return [
            {"role": "system", "content": MULTI_TURN_RUBRIC},
            {"role": "user", "content": "\n".join(lines)},
        ]

    @staticmethod
    def pairwise_prompt(item: PairItem) -> Messages:
        user = (
            f"[User Question]\n{item.question}\n\n[The Start of Assistant A's Answer]\n"
            f"{item.answer_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's "
            f"Answer]\n{item.answer_b}\n[The End of Assistant B's Answer]"
        )
        return [{"role": "system", "content": PAIRWISE_RUBRIC}, {"role": "user", "content": user}]


def _verdict(value: float | None, prompt: Messages, reply: str) -> Verdict:
    return Verdict(math.nan if value is None else value, prompt, reply)


class HFChat:
    """A local HF model answering judge prompts (greedy)."""

    def __init__(self, model_dir: str, max_new_tokens: int = 512):
        from psft_orchestrator.evals.generate import SamplingParams, load_model

        self.model, self.tokenizer = load_model(model_dir)
        self.params = SamplingParams(k=1, temperature=0.0, max_new_tokens=max_new_tokens)

    def __call__(self, prompts: list[Messages]) -> list[str]:
        from psft_orchestrator.evals.generate import generate

        return [c[0] for c in generate(self.model, self.tokenizer, prompts, self.params)]
