"""Machine-checkable format instructions, the toy world's IFEval.

A benchmark row carries `checks`, e.g. `[{"type": "uppercase"}, {"type": "ends_with", "value": "."}]`.
`check(response, checks)` returns `(strict, loose)` at the prompt level, as IFEval reports:

- strict: the response as written follows every instruction;
- loose: every instruction is followed by at least one relaxed variant of the response — markdown
  `*` removed, first line dropped, last line dropped, or combinations (IFEval's loose mode, which
  forgives "Sure, here it is:" preambles and trailing remarks).

Rule types (value in brackets): uppercase, lowercase, ends_with [str], starts_with [str],
no_comma, quotation, word_count [int; optional "relation": exactly | at_least | less_than],
contains [word].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Mapping[str, Any]


def _words(text: str) -> list[str]:
    return re.findall(r"\b\w+\b", text)


def _word_count(text: str, c: Check) -> bool:
    n, relation = len(_words(text)), c.get("relation", "exactly")
    target = int(c["value"])
    if relation == "exactly":
        return n == target
    if relation == "at_least":
        return n >= target
    if relation == "less_than":
        return n < target
    raise ValueError(f"unknown word_count relation {relation!r}")


RULES: dict[str, Callable[[str, Check], bool]] = {
    "uppercase": lambda r, c: r.isupper(),
    "lowercase": lambda r, c: r.islower(),
    "ends_with": lambda r, c: r.strip().lower().endswith(str(c["value"]).lower()),
    "starts_with": lambda r, c: r.strip().lower().startswith(str(c["value"]).lower()),
    "no_comma": lambda r, c: "," not in r,
    "quotation": lambda r, c: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "word_count": _word_count,
    "contains": lambda r, c: (
        re.search(rf"\b{re.escape(str(c['value']))}\b", r, re.IGNORECASE) is not None
    ),
}


def follows(response: str, c: Check) -> bool:
    """Whether `response` satisfies one instruction (strictly, as written)."""
    rule = RULES.get(c["type"])
    if rule is None:
        raise ValueError(f"unknown check type {c['type']!r}; known: {sorted(RULES)}")
    return bool(rule(response, c))


def loose_variants(response: str) -> list[str]:
    """IFEval's relaxed readings: {as is, no '*'} x {all lines, drop first, drop last, drop both}."""
    lines = response.split("\n")
    cuts = [lines, lines[1:], lines[:-1], lines[1:-1]]
    out: list[str] = [response]  # strict implies loose, even for an empty response
    for cut in cuts:
        text = "\n".join(cut)
        for v in (text, text.replace("*", "")):
            if v.strip() and v not in out:
                out.append(v)
    return out


def check(response: str, checks: Sequence[Check]) -> tuple[bool, bool]:
    """(strict, loose) prompt-level verdicts; both True for an empty `checks`."""
    strict = all(follows(response, c) for c in checks)
    variants = loose_variants(response)
    loose = all(any(follows(v, c) for v in variants) for c in checks)
    return strict, loose
