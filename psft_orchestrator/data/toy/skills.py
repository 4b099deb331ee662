"""Out-of-domain skills: small exact-match or multiple-choice tasks unrelated to arithmetic.

They stand in for the paper's general benchmarks (GPQA, ARC, MMLU-Pro, ...): the pretrained toy
model learns them from the general corpus, and a fine-tuning method that forgets less keeps
more of them. Each sampler returns a `SkillItem`: the user prompt, the one correct answer
(compared by exact match after stripping), and for multiple choice the option letters.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SkillItem:
    skill: str
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None


SORT_WORDS = ("cat", "dog", "fish", "bird", "horse", "cow", "frog", "lion", "duck", "goat",
              "apple", "pear", "plum", "lemon", "mango", "grape", "red", "blue", "green",
              "yellow", "black", "white", "pink", "brown")  # fmt: skip
COUNT_LETTERS = "abcd"
# Item sizes: short on purpose, so the tiny base learns to read the prompt within the CPU budget
# (docs/toy-world.md, "Calibration").
REVERSE_LEN = (3, 4)
SORT_DIGITS_LEN = (3, 4)
SORT_WORDS_N = (2, 3)
COUNT_LEN = (3, 5)  # string length (at least the count)


def reverse(rng: random.Random) -> SkillItem:
    s = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(*REVERSE_LEN)))
    return SkillItem("reverse", f'Reverse the letters of "{s}".', s[::-1])


def sort_digits(rng: random.Random) -> SkillItem:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(*SORT_DIGITS_LEN)))
    return SkillItem(
        "sort_digits", f"Sort the digits of {digits} in increasing order.", "".join(sorted(digits))
    )


def sort_words(rng: random.Random) -> SkillItem:
    words = rng.sample(SORT_WORDS, rng.randint(*SORT_WORDS_N))
    return SkillItem(
        "sort_words",
        f"Sort these words in alphabetical order: {', '.join(words)}.",
        ", ".join(sorted(words)),
    )


def count_char(rng: random.Random) -> SkillItem:
    """The count (0-3) is drawn first, uniformly, so always answering "1" scores only ~25%."""
    letter = rng.choice(COUNT_LETTERS)
    k = rng.randint(0, 3)
    others = COUNT_LETTERS.replace(letter, "")
    chars = [letter] * k + [rng.choice(others) for _ in range(rng.randint(*COUNT_LEN) - k)]
    rng.shuffle(chars)
    s = "".join(chars)
    return SkillItem(
        "count_char",
        f'How many times does the letter "{letter}" appear in "{s}"?',
        str(s.count(letter)),
    )


def compare(rng: random.Random) -> SkillItem:
    """Multiple choice (the GPQA/MMLU-Pro stand-in): pick the largest or smallest of four
    one-digit numbers (one token each, so the comparison is learnable by the tiny base)."""
    numbers = rng.sample(range(10), 4)
    want = rng.choice(("largest", "smallest"))
    best = max(numbers) if want == "largest" else min(numbers)
    letters = ("A", "B", "C", "D")
    options = "\n".join(f"{c}. {n}" for c, n in zip(letters, numbers, strict=True))
    prompt = (
        f"Which number is the {want}?\n{options}\nAnswer with the letter of the correct option."
    )
    return SkillItem("compare", prompt, letters[numbers.index(best)], letters)


def copy_string(rng: random.Random) -> SkillItem:
    """Corpus-only warm-up skill (not benchmarked): repeat a short string. Plain copying is what
    builds the induction heads that reverse, sort and count rely on."""
    s = "".join(
        rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(2, 5))
    )
    return SkillItem("copy", f'Write "{s}".', s)


SKILLS: dict[str, Callable[[random.Random], SkillItem]] = {
    "reverse": reverse,
    "sort_digits": sort_digits,
    "sort_words": sort_words,
    "count_char": count_char,
    "compare": compare,
}
