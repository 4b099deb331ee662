"""Final-answer extraction and checking: the last `\\boxed{...}` of a completion, judged by Math-Verify.

`verify(prediction_text, reference)` is the single answer checker of the project: the filter stage,
the math eval suite and the GRPO reward all call it, so a number in a table means the same thing
everywhere.

Timeouts: Math-Verify guards parsing and comparison with `signal.alarm`, which only works in the
main thread of the main interpreter. In the main thread we keep its guards; in any other thread
(a trainer's reward thread, a thread pool) we switch them off and instead refuse answers longer
than `MAX_ANSWER_CHARS`, which is where pathological sympy inputs come from in practice.
"""

from __future__ import annotations

import functools
import re
import threading

_BOX_RE = re.compile(r"\\(boxed|fbox)\s*\{")

MAX_ANSWER_CHARS = 1000
"""Longer boxed answers (or references) are judged wrong without parsing."""

TIMEOUT_S = 5
"""Math-Verify's parse and compare timeouts (seconds), used in the main thread only."""


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced; None if absent.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    """
    for match in reversed(list(_BOX_RE.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            ch = text[i]
            if ch == "{" and text[i - 1] != "\\":
                depth += 1
            elif ch == "}" and text[i - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
        # unbalanced (truncated completion): try an earlier box
    return None


def _timeouts() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def parse_answer(answer: str) -> list:
    """Math-Verify's parse of one bare answer (LaTeX or plain), with the thread-safe timeout."""
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=_timeouts())


@functools.lru_cache(maxsize=65536)
def verify_answer(answer: str, reference: str) -> bool:
    """Is the bare `answer` (already extracted) equivalent to `reference` according to Math-Verify?

    Identical strings are equal without parsing (most rows of a clean dataset: about 10x faster),
    and verdicts are cached, since datasets repeat their answers.
    """
    from math_verify import verify as mv_verify

    answer, reference = answer.strip(), reference.strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS or len(reference) > MAX_ANSWER_CHARS:
        return False
    if answer == reference:
        return True
    gold = parse_answer(reference)
    pred = parse_answer(answer)
    if not gold or not pred:
        return False
    try:
        return bool(mv_verify(gold, pred, timeout_seconds=_timeouts()))
    except Exception:  # Math-Verify raises on some sympy internals; an unjudgeable answer is wrong
        return False


def verify(prediction_text: str, reference: str) -> bool:
    """True when the last `\\boxed{}` of `prediction_text` is equivalent to `reference`.

    Equivalent forms match (1/2, \\frac{1}{2}, 0.5; "5 cm" and 5; intervals; sets in any order);
    a completion without a `\\boxed{}` is wrong.
    """
    answer = extract_boxed(prediction_text)
    if answer is None:
        return False
    return verify_answer(answer, str(reference))
