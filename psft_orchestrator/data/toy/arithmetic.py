"""In-domain skill: multi-step arithmetic with step-by-step solutions.

Stands in for the paper's math data (OpenR1-Math for SFT, AIME/AMC/MATH-500 for eval): a
problem is a start amount and `level` operations (add, subtract, double/triple). The in-domain
form is a left-to-right expression in one of four wordings ("What is 7+2-1?") whose solution
does one operation per sentence and then boxes the result (`7+2 = 9. 9-1 = 8. The answer is
\\boxed{8}.`), so Math-Verify scores it like a real one. The pretraining corpus has the same
solutions without the box (`style="plain"`: level 2, training split) and the single steps as
drills; the same problems as word problems ("Lily has 7 pencils. ...") were its form up to
version 6. The "long" style adds a check after every step (the inverse operation), the toy
counterpart of long chain-of-thought traces.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

NAMES = {"Tom": "he", "Ben": "he", "Sam": "he", "Max": "he", "Leo": "he",
         "Anna": "she", "Lily": "she", "Mia": "she", "Emma": "she", "Zoe": "she"}  # fmt: skip
ITEMS = ("apples", "pencils", "books", "coins", "marbles", "stickers", "cookies", "cards",
         "stamps", "shells")  # fmt: skip

ADD_VERBS = ("buys", "finds", "gets", "receives")
SUB_VERBS = ("gives away", "loses", "sells", "uses")
MULTIPLIERS = {2: "doubles", 3: "triples"}
# One-digit amounts on purpose: the tiny base learns these facts (one token in, one token out)
# from the corpus's drills (`drill`); what it does not do is chain them or write \\boxed{}, which
# SFT teaches (docs/toy-world.md, "Calibration").
MAX_VALUE = 9
MAX_OPERAND = 9
START_RANGE = (2, 9)
# Wordings of the in-domain question (`MathProblem.wording`): with one-digit amounts there are
# only 77 level-1 and about 760 level-2 chains, so the wordings are what gives SFT a thousand
# distinct rows of levels 1-2. Words of the toy tokenizer only.
QUESTION_FORMS = (
    "What is {}?",
    "How much is {}?",
    "Give the result of {}.",
    "Write the result of {}.",
)


@dataclass(frozen=True)
class Step:
    """One operation: `op` in {"+", "-", "*"}, its operand, and the verb used in the text."""

    op: str
    k: int
    verb: str


@dataclass(frozen=True)
class MathProblem:
    name: str
    item: str
    start: int
    steps: tuple[Step, ...]
    wording: int = 0  # index into QUESTION_FORMS of the expression form's question

    @property
    def level(self) -> int:
        return len(self.steps)

    def values(self) -> list[int]:
        """Running totals: start, then the amount after each step."""
        out = [self.start]
        for s in self.steps:
            out.append(apply(out[-1], s))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def sentences(self) -> list[str]:
        """The question's statements: the start amount, then one sentence per step."""
        pron = NAMES[self.name].capitalize()
        out = [f"{self.name} has {self.start} {self.item}."]
        for i, s in enumerate(self.steps):
            lead = pron if i == 0 else f"Then {pron.lower()}"
            if s.op == "*":
                out.append(f"{'Then the' if i else 'The'} number of {self.item} {s.verb}.")
            elif s.op == "+":
                out.append(f"{lead} {s.verb} {s.k} more {self.item}.")
            else:
                out.append(f"{lead} {s.verb} {s.k} {self.item}.")
        return out

    def expression(self) -> str:
        """The problem as one left-to-right expression: "7+2-1", "(7-4)*2+1". No spaces around
        the operators: an operand is then the token right after its operator, which the tiny
        model copies far more reliably than one after a space token (docs/toy-world.md)."""
        text = str(self.start)
        for i, s in enumerate(self.steps):
            if s.op == "*" and i > 0:
                text = f"({text})"
            text = f"{text}{s.op}{s.k}"
        return text

    def question(self, form: str = "expression") -> str:
        """`form`: "expression" ("What is 7+2-1?", the in-domain task) or "words" (the
        word problem, the pretraining corpus's form)."""
        if form == "expression":
            return QUESTION_FORMS[self.wording].format(self.expression())
        return " ".join([*self.sentences(), f"How many {self.item} does {self.name} have now?"])

    def solution(
        self,
        style: str = "short",
        corrupt_step: int | None = None,
        delta: int = 0,
        form: str = "expression",
    ) -> str:
        """The worked solution: one `a op b = c.` per step, in order, then the answer. For the
        word form each step first restates its sentence ("She finds 2 more pencils, so 7+2 =
        9."). `style`: "short", "long" (a check after every step and a recap) or "plain" (short,
        but the answer is not in \\boxed{}: the pretraining corpus's form). `corrupt_step` /
        `delta` inject an arithmetic slip at that step (propagated to the end), which is how
        preference pairs get a plausible wrong answer."""
        words = form == "words"
        first, *rest = self.sentences()
        parts = [first] if words else []
        x = self.start
        for i, (s, sentence) in enumerate(zip(self.steps, rest, strict=True)):
            y = apply(x, s) + (delta if i == corrupt_step else 0)
            step = f"{x}{s.op}{s.k} = {y}."
            parts.append(f"{sentence[:-1]}, so {step}" if words else step)
            if style == "long":
                inv = {"+": "-", "-": "+", "*": "/"}[s.op]
                parts.append(f"Check: {y}{inv}{s.k} = {x}. Correct.")
            x = y
        if style == "long":
            parts.append(
                f"So {self.name} has {x} {self.item} now." if words else f"So the result is {x}."
            )
        parts.append(
            f"The answer is {x}." if style == "plain" else f"The answer is \\boxed{{{x}}}."
        )
        return " ".join(parts)


def apply(x: int, step: Step) -> int:
    if step.op == "+":
        return x + step.k
    if step.op == "-":
        return x - step.k
    return x * step.k


def sample_step(rng: random.Random, x: int) -> Step:
    """One operation on the amount `x` whose result stays in 0..MAX_VALUE."""
    ops = ["+", "-"] + (["*"] if x * 2 <= MAX_VALUE else [])
    op = rng.choice(ops)
    if op == "+" and x + 1 <= MAX_VALUE:
        return Step("+", rng.randint(1, min(MAX_OPERAND, MAX_VALUE - x)), rng.choice(ADD_VERBS))
    if op in ("+", "-") and x >= 1:
        return Step("-", rng.randint(1, min(x, MAX_OPERAND)), rng.choice(SUB_VERBS))
    if op == "*":
        k = 3 if x * 3 <= MAX_VALUE and rng.random() < 0.4 else 2
        return Step("*", k, MULTIPLIERS[k])
    return Step("+", rng.randint(1, MAX_OPERAND), rng.choice(ADD_VERBS))  # x == 0


def sample_problem(rng: random.Random, level: int) -> MathProblem:
    """A problem with `level` steps whose running totals stay in 0..MAX_VALUE."""
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    name = rng.choice(sorted(NAMES))
    item = rng.choice(ITEMS)
    start = rng.randint(*START_RANGE)
    x, steps = start, []
    for _ in range(level):
        step = sample_step(rng, x)
        steps.append(step)
        x = apply(x, step)
    return MathProblem(name, item, start, tuple(steps))


# The split of the problem space: a problem is in the benchmark split when the CRC-32 of its
# expression is 0 mod HELD_OUT_MOD (a quarter of the problems at every level), else in the
# training split. Benchmarks draw only from the first, training data (SFT, preference pairs, RL
# prompts) only from the second, so no benchmark problem is ever a training row.
HELD_OUT_MOD = 4
SPLITS = ("train", "bench")
MAX_TRIES = 200


def split_of(problem: MathProblem) -> str:
    """Which split of the problem space `problem` belongs to: "bench" or "train"."""
    held_out = zlib.crc32(problem.expression().encode()) % HELD_OUT_MOD == 0
    return "bench" if held_out else "train"


def sample_split_problem(rng: random.Random, level: int, split: str) -> MathProblem | None:
    """A problem of `level` steps from `split` (rejection sampling); None when MAX_TRIES draws
    found none (not in practice: each split holds a quarter or more of every level)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for _ in range(MAX_TRIES):
        p = sample_problem(rng, level)
        if split_of(p) == split:
            return p
    return None


def drill(rng: random.Random) -> tuple[str, str]:
    """A bare arithmetic fact, as the pretraining corpus teaches it: ("What is 7+2?",
    "7+2 = 9."), a level-1 problem without the system prompt and without \\boxed{}: the base
    knows the facts, SFT teaches the answer format and chaining them."""
    x = rng.randint(0, MAX_VALUE)
    step = sample_step(rng, x)
    return f"What is {x}{step.op}{step.k}?", f"{x}{step.op}{step.k} = {apply(x, step)}."


def messages(problem: MathProblem, response: str | None = None) -> list[dict[str, str]]:
    """The chat of one problem (expression form): system prompt, user question, optionally the
    assistant turn."""
    msgs = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem.question()},
    ]
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs
