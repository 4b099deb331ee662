"""Exact-match and multiple-choice grading (the toy out-of-domain skills, GPQA/MMLU-style rows).

Free-form rows are correct when the answer equals, after stripping whitespace and a final period,
the whole completion, its last \\boxed{}, or its last non-empty line. Multiple-choice rows
(`choices` = option letters or option texts; `answer` = a letter, an option text or an index) are
correct when the option picked by the completion is the gold option.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from psft_orchestrator.data.answers import extract_boxed

_ANSWER_IS = re.compile(r"(?:answer|option)\s*(?:is|:)?\s*:?\s*\(?([A-Za-z0-9]+)\)?", re.IGNORECASE)


def normalize(text: str) -> str:
    text = text.strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text.strip().strip('"').strip()


def candidates(completion: str) -> list[str]:
    """Readings of a completion's final answer, most explicit first."""
    out = []
    boxed = extract_boxed(completion)
    if boxed is not None:
        out.append(boxed)
    out.append(completion)
    lines = [ln for ln in completion.splitlines() if ln.strip()]
    if lines:
        out.append(lines[-1])
    return [normalize(c) for c in out]


def grade_exact(completion: str, answer: str) -> bool:
    gold = normalize(str(answer))
    return any(c == gold for c in candidates(completion))


def _letter(i: int) -> str:
    return chr(ord("A") + i)


def gold_index(answer: str | int, choices: Sequence[str]) -> int:
    """Index of the gold option from a letter, an option text or an integer index."""
    if isinstance(answer, int):
        return answer
    norm = [normalize(c) for c in choices]
    a = normalize(answer)
    if a in norm:
        return norm.index(a)
    if len(a) == 1 and a.isalpha() and ord(a.upper()) - ord("A") < len(choices):
        return ord(a.upper()) - ord("A")
    if a.isdigit() and int(a) < len(choices):
        return int(a)
    raise ValueError(f"answer {answer!r} is none of the choices {list(choices)}")


def picked_index(completion: str, choices: Sequence[str]) -> int | None:
    """The option a completion picks: its boxed answer, "the answer is X", or its leading token."""
    norm = [normalize(c) for c in choices]
    letters = [_letter(i) for i in range(len(choices))]
    readings = [c for c in candidates(completion)]
    readings += [m.group(1) for m in _ANSWER_IS.finditer(completion)][-1:]
    first = re.match(r"\s*\(?([A-Za-z0-9]+)\)?[.):]?(\s|$)", completion)
    if first:
        readings.append(first.group(1))
    for r in readings:
        r = normalize(r)
        if r in norm:
            return norm.index(r)
        if r.upper() in letters and len(r) == 1:
            return letters.index(r.upper())
    return None


def grade_choice(completion: str, answer: str | int, choices: Sequence[str]) -> bool:
    return picked_index(completion, choices) == gold_index(answer, choices)


def grade(completion: str, answer: str | int, choices: Sequence[str] | None = None) -> bool:
    """Exact match, or multiple choice when `choices` is given."""
    if choices:
        return grade_choice(completion, answer, choices)
    return grade_exact(completion, str(answer))
