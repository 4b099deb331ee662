"""Out-of-domain skills: small exact-match or multiple-choice tasks unrelated to arithmetic.

They stand in for the paper's general benchmarks (GPQA, ARC, MMLU-Pro, ...): the pretrained toy
model learns them from the general corpus, and a fine-tuning method that forgets less keeps
more of them. Each sampler returns a `SkillItem`: the user prompt, the one correct answer
(compared by exact match after stripping), and for multiple choice the options.
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


# One word per option of `choice`, from four disjoint categories ("orange" is in none: it is a
# colour and a fruit), so exactly one option answers the question.
CHOICE_CATEGORIES = {
    "animal": ("cat", "dog", "fish", "bird", "horse", "cow", "frog", "lion", "duck", "goat"),
    "color": ("red", "blue", "green", "yellow", "black", "white", "pink", "brown", "purple"),
    "fruit": ("apple", "pear", "plum", "lemon", "mango", "grape"),
    "shape": ("circle", "square", "star", "heart", "oval", "line"),
}
# Item sizes: short on purpose, so the tiny base learns to read the prompt within the CPU budget
# (docs/toy-world.md, "Calibration").
SORT_DIGITS_LEN = (3, 4)
UPPER_LEN = (3, 4)


def sort_digits(rng: random.Random) -> SkillItem:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(*SORT_DIGITS_LEN)))
    return SkillItem(
        "sort_digits", f"Sort the digits of {digits} in increasing order.", "".join(sorted(digits))
    )


def choice(rng: random.Random) -> SkillItem:
    """Multiple choice (the GPQA/ARC/MMLU-Pro stand-in): which of four words, one per category,
    belongs to the asked category; answered with the word (graded as a choice among the four).
    One option per line, so an option is the same token as the answer (`pink`, not ` pink`)."""
    categories = rng.sample(sorted(CHOICE_CATEGORIES), 4)
    want = rng.choice(categories)
    words = [rng.choice(CHOICE_CATEGORIES[c]) for c in categories]
    article = "an" if want[0] in "aeiou" else "a"
    prompt = f"Which of these is {article} {want}?\n" + "\n".join(words)
    return SkillItem("choice", prompt, words[categories.index(want)], tuple(words))


def next_letter(rng: random.Random) -> SkillItem:
    """Knowledge recall (the alphabet): the letter after a given one."""
    i = rng.randrange(25)
    letter = string.ascii_lowercase[i]
    return SkillItem(
        "next_letter",
        f'Which letter comes after "{letter}" in the alphabet?',
        string.ascii_lowercase[i + 1],
    )


def upper(rng: random.Random) -> SkillItem:
    s = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(*UPPER_LEN)))
    return SkillItem("upper", f'Write "{s}" in uppercase letters.', s.upper())


def copy_string(rng: random.Random) -> SkillItem:
    """Corpus-only warm-up skill (not benchmarked): repeat a short string. Plain copying is what
    builds the induction heads that reverse, sort and count rely on."""
    s = "".join(
        rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(2, 5))
    )
    return SkillItem("copy", f'Write "{s}".', s)


# The out-of-domain skills of the corpus and of `ood_bench(skill="all")`: the ones the tiny base
# learns in every seed within the CPU budget (docs/toy-world.md, "Calibration").
SKILLS: dict[str, Callable[[random.Random], SkillItem]] = {
    "next_letter": next_letter,
    "sort_digits": sort_digits,
    "upper": upper,
}
# Benchmarks that can be asked for by name but are not in the corpus: `choice` (multiple
# choice) was learned in some seeds only, so the base answers it near chance, like a small model
# on TruthfulQA mc1 (specs/alignment_dpo.yaml's stand-in).
EXTRA_SKILLS: dict[str, Callable[[random.Random], SkillItem]] = {"choice": choice}
