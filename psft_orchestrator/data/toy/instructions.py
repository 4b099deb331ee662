"""Instruction following in the spirit of IFEval: a small content request plus format rules.

"List 3 animals. Answer in uppercase. End your answer with a period." The content is trivial on
purpose; what is scored is the format, by the rules in `checks.py`. Each item carries a
reference response that follows every rule (the generator asserts it), used as the assistant
turn in the corpus and as the "chosen" side of preference pairs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from psft_orchestrator.data.toy.checks import check

CATEGORIES = {
    "colors": (
        "red",
        "blue",
        "green",
        "yellow",
        "black",
        "white",
        "pink",
        "brown",
        "orange",
        "purple",
    ),
    "animals": ("cat", "dog", "fish", "bird", "horse", "cow", "frog", "lion", "duck", "goat"),
    "fruits": ("apple", "pear", "plum", "lemon", "mango", "grape", "orange"),
    "shapes": ("circle", "square", "star", "heart", "oval", "line"),
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

# Rule name -> (instruction sentence, check). Rules in one item must be compatible.
RULES: dict[str, tuple[str, dict[str, Any]]] = {
    "uppercase": ("Answer in uppercase.", {"type": "uppercase"}),
    "lowercase": ("Answer in lowercase.", {"type": "lowercase"}),
    "period": ("End your answer with a period.", {"type": "ends_with", "value": "."}),
    "exclamation": (
        "End your answer with an exclamation mark.",
        {"type": "ends_with", "value": "!"},
    ),
    "prefix": ('Begin your answer with "Answer:".', {"type": "starts_with", "value": "Answer:"}),
    "quotes": ("Wrap your entire response in quotation marks.", {"type": "quotation"}),
    "no_comma": ("Do not use any commas.", {"type": "no_comma"}),
    "word_count": ("Use exactly {n} words.", {"type": "word_count", "value": 0}),
    "keyword": ("Include the word {word}.", {"type": "contains", "value": ""}),
}
CONFLICTS = {
    frozenset(p)
    for p in [
        ("uppercase", "lowercase"), ("period", "exclamation"), ("uppercase", "prefix"),
        ("lowercase", "prefix"), ("quotes", "period"), ("quotes", "exclamation"),
        ("quotes", "prefix"), ("prefix", "word_count"),
    ]
}  # fmt: skip


@dataclass(frozen=True)
class InstructionItem:
    prompt: str
    response: str
    checks: tuple[dict[str, Any], ...]


def sample_rules(rng: random.Random, k: int) -> list[str]:
    names = sorted(RULES)
    chosen: list[str] = []
    while len(chosen) < k:
        name = rng.choice(names)
        if name not in chosen and all(frozenset((name, c)) not in CONFLICTS for c in chosen):
            chosen.append(name)
    return chosen


def sample_instruction(rng: random.Random) -> InstructionItem:
    category = rng.choice(sorted(CATEGORIES))
    n = rng.randint(2, 4)
    items = rng.sample(CATEGORIES[category], n)
    rules = sample_rules(rng, rng.randint(1, 2))

    sentences = [f"List {NUMBER_WORDS[n]} {category}."]
    checks: list[dict[str, Any]] = []
    for name in rules:
        text, c = RULES[name]
        c = dict(c)
        if name == "word_count":
            c["value"] = n
        if name == "keyword":
            c["value"] = items[0]
        sentences.append(text.format(n=NUMBER_WORDS[n], word=c.get("value", "")))
        checks.append(c)

    response = (" " if "no_comma" in rules else ", ").join(items)
    if "uppercase" in rules:
        response = response.upper()
    if "prefix" in rules:
        response = "Answer: " + response
    if "period" in rules:
        response += "."
    if "exclamation" in rules:
        response += "!"
    if "quotes" in rules:
        response = f'"{response}"'
    assert check(response, checks) == (True, True), (response, checks)
    return InstructionItem(" ".join(sentences), response, tuple(checks))


def violate(item: InstructionItem) -> str:
    """A response with the same content that breaks the format (the rejected side of a pair)."""
    r = item.response.strip('"').removeprefix("Answer: ").rstrip(".!")
    r = r.lower() if r.isupper() else r.upper()
    r = r.replace(" ", ", ") if "," not in r else r
    for c in item.checks:
        if c["type"] == "contains":
            r = re.sub(rf"\b{re.escape(c['value'])}\b", "something", r, flags=re.IGNORECASE)
    return r + " and more"
