"""The toy world's data files: one entry point, `write_toy_data`, for every task.

Rows follow docs/architecture.md "Data row formats", so every stage reads them like the real
datasets. Generation is seeded by the task name and the seed only (`random.Random("task/seed")`),
so the same call writes the same bytes on any machine; different tasks draw from different
streams, so e.g. `math_sft` and `math_bench` with seed 0 are not the same problems.

Tasks (artifact type):
    math_sft      (dataset)    math chats with step-by-step solutions, distinct problems of the
                               training split; params: level (default 1-2), style
    math_bench    (benchmark)  math problems of the held-out split; params: level (default 1-2)
    ood_bench     (benchmark)  exact-match / multiple-choice skills; params: skill ("all" or one)
    ifeval_bench  (benchmark)  format instructions with machine-checkable `checks`
    mt_bench      (benchmark)  two such instructions as turn 1 and a follow-up turn 2
    corpus        (corpus)     pretraining text: all skills as ChatML transcripts; params: math_share,
                               math_levels, arith_share, chain_share, ifeval_share, copy_share
    preference    (preference) chosen/rejected pairs (math and format); params: domain
    prompts       (prompts)    math RL prompts with ground truth; params: level
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from psft_orchestrator.data.toy import arithmetic, instructions
from psft_orchestrator.data.toy.chatml import render_chat
from psft_orchestrator.data.toy.skills import EXTRA_SKILLS, SKILLS, copy_string

# Bump whenever any generator's output changes: node fingerprints include it.
GENERATOR_VERSION = 7

Row = dict[str, Any]
MATH_LEVELS = (1, 2)


def _levels(level: int | list[int] | None) -> list[int]:
    if level is None:
        return list(MATH_LEVELS)
    return [level] if isinstance(level, int) else list(level)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _worded(rng: random.Random, p: arithmetic.MathProblem) -> arithmetic.MathProblem:
    return dataclasses.replace(p, wording=rng.randrange(len(arithmetic.QUESTION_FORMS)))


def _problem(rng: random.Random, levels: list[int], split: str) -> arithmetic.MathProblem:
    """A problem of one of `levels` (picked uniformly) from `split` of the problem space, in one
    of the question's wordings."""
    p = arithmetic.sample_split_problem(rng, rng.choice(levels), split)
    if p is None:  # a quarter of every level is in each split: never in practice
        raise ValueError(f"no problem of levels {levels} in the {split} split")
    return _worded(rng, p)


def _distinct_problem(
    rng: random.Random, levels: list[int], seen: set[str]
) -> arithmetic.MathProblem:
    """A training-split problem whose question (expression and wording) is not in `seen`; a
    level whose questions are used up gives way to the others (level 1 has 232 training
    questions: 58 chains in 4 wordings; level 2 about 2 280)."""
    left = list(levels)
    while left:
        level = rng.choice(left)
        for _ in range(arithmetic.MAX_TRIES):
            p = arithmetic.sample_split_problem(rng, level, "train")
            if p is None:
                break
            p = _worded(rng, p)
            if p.question() not in seen:
                seen.add(p.question())
                return p
        left.remove(level)
    raise ValueError(
        f"math_sft: only {len(seen)} distinct questions of levels {levels}; ask for fewer rows "
        "or more levels"
    )


def math_sft(
    rng: random.Random,
    level: int | list[int] | None = None,
    style: str = "short",
    *,
    seen: set[str],
) -> Row:
    """SFT row: system + question + worked solution; `style="long"` adds verification lines.
    The rows of one file are distinct questions of the training split (`seen` holds the file's
    questions so far): the filter's deduplication keeps them all, and no benchmark problem is
    among them, in any wording."""
    if style not in ("short", "long"):
        raise ValueError(f"style must be 'short' or 'long', got {style!r}")
    p = _distinct_problem(rng, _levels(level), seen)
    return {
        "messages": arithmetic.messages(p, p.solution(style)),
        "answer": str(p.answer),
        "source": f"toy_math_l{p.level}",
    }


def math_bench(
    rng: random.Random, level: int | list[int] | None = None, name: str | None = None
) -> Row:
    """Benchmark row from the held-out split; the task name is `toy_math` or `toy_math_l<level>`
    for a single level."""
    levels = _levels(level)
    p = _problem(rng, levels, "bench")
    task = name or (f"toy_math_l{levels[0]}" if len(levels) == 1 else "toy_math")
    return {"prompt": arithmetic.messages(p), "answer": str(p.answer), "task": task}


def ood_bench(rng: random.Random, skill: str = "all") -> Row:
    """Benchmark row of one OOD skill (`skill="all"` picks one per row)."""
    known = {**SKILLS, **EXTRA_SKILLS}
    name = rng.choice(sorted(SKILLS)) if skill == "all" else skill
    if name not in known:
        raise ValueError(f"unknown skill {skill!r}; choose 'all' or one of {sorted(known)}")
    item = known[name](rng)
    row: Row = {"prompt": _user(item.prompt), "answer": item.answer, "task": f"toy_{name}"}
    if item.choices:
        row["choices"] = list(item.choices)
    return row


def ifeval_bench(rng: random.Random) -> Row:
    item = instructions.sample_instruction(rng)
    return {
        "prompt": _user(item.prompt),
        "answer": item.response,
        "task": "toy_ifeval",
        "checks": [dict(c) for c in item.checks],
    }


def mt_bench(rng: random.Random) -> Row:
    """Two format instructions in one conversation (an MT-Bench stand-in): the second is asked
    as a follow-up after the model's answer to the first; each turn keeps its own checks."""
    first, second = instructions.sample_instruction(rng), instructions.sample_instruction(rng)
    return {
        "prompt": _user(first.prompt),
        "turns": [first.prompt, second.prompt],
        "answer": first.response,
        "task": "toy_mt_bench",
        "turn_checks": [[dict(c) for c in first.checks], [dict(c) for c in second.checks]],
    }


def corpus(
    rng: random.Random,
    math_share: float = 0.0,
    math_levels: list[int] | None = None,
    arith_share: float = 0.1,
    chain_share: float = 0.1,
    ifeval_share: float = 0.1,
    copy_share: float = 0.2,
) -> Row:
    """One pretraining document: a single-turn chat, as ChatML text.

    Mostly OOD skills (the base model should be good at them), some format instructions, plain
    "copy the string" items (they bootstrap the copy/induction heads the skills need), bare
    arithmetic facts ("What is 5+3?" -> "5+3 = 8.", a level-1 problem without the system
    prompt) and worked level-2 chains of the training split in any wording ("How much is
    7+2-1?" -> "7+2 = 9. 9-1 = 8.", the SFT solution without its box); word problems ("Lily has
    7 pencils. ..." -> "... The answer is 8.") only if `math_share` > 0 (versions up to 6).
    Nothing has the system prompt or \\boxed{}: the base knows the steps, and what SFT teaches
    is the paper's answer format, which the math benchmark requires (docs/toy-world.md)."""
    u = rng.random()
    if u < math_share:
        p = arithmetic.sample_problem(rng, rng.choice(math_levels or list(MATH_LEVELS)))
        prompt, response = p.question("words"), p.solution("plain", form="words")
    elif u < math_share + arith_share:
        prompt, response = arithmetic.drill(rng)
    elif u < math_share + arith_share + chain_share:
        # The SFT solution without its \\boxed{}: what SFT adds is the box.
        p = _problem(rng, [2], "train")
        prompt, response = p.question(), p.solution("plain")
    elif u < math_share + arith_share + chain_share + ifeval_share:
        item = instructions.sample_instruction(rng)
        prompt, response = item.prompt, item.response
    elif u < math_share + arith_share + chain_share + ifeval_share + copy_share:
        s = copy_string(rng)
        prompt, response = s.prompt, s.answer
    else:
        s = SKILLS[rng.choice(sorted(SKILLS))](rng)
        prompt, response = s.prompt, s.answer
    return {"text": render_chat([*_user(prompt), {"role": "assistant", "content": response}])}


def preference(
    rng: random.Random, domain: str = "mixed", level: int | list[int] | None = None
) -> Row:
    """Chosen = correct and well-formed; rejected = an arithmetic slip, a missing \\boxed{},
    or (format domain) a response that breaks the instructions."""
    if domain not in ("mixed", "math", "ifeval"):
        raise ValueError(f"domain must be mixed, math or ifeval, got {domain!r}")
    if domain == "ifeval" or (domain == "mixed" and rng.random() < 0.5):
        item = instructions.sample_instruction(rng)
        return {
            "prompt": _user(item.prompt),
            "chosen": item.response,
            "rejected": instructions.violate(item),
        }
    p = _problem(rng, _levels(level), "train")
    chosen = p.solution("short")
    if rng.random() < 0.7:
        rejected = p.solution(
            "short", corrupt_step=rng.randrange(p.level), delta=rng.choice([-2, -1, 1, 2])
        )
    else:
        rejected = chosen.replace(f"\\boxed{{{p.answer}}}", str(p.answer))
    return {"prompt": arithmetic.messages(p), "chosen": chosen, "rejected": rejected}


def prompts(rng: random.Random, level: int | list[int] | None = None) -> Row:
    p = _problem(rng, _levels(level), "train")
    return {
        "prompt": arithmetic.messages(p),
        "ground_truth": str(p.answer),
        "data_source": "toy_math",
    }


_GENERATORS: dict[str, Callable[..., Row]] = {
    "math_sft": math_sft,
    "math_bench": math_bench,
    "ood_bench": ood_bench,
    "ifeval_bench": ifeval_bench,
    "mt_bench": mt_bench,
    "corpus": corpus,
    "preference": preference,
    "prompts": prompts,
}

# Tasks whose rows are distinct within a file (the generator tracks what it wrote).
_DISTINCT = {"math_sft"}

# Task -> artifact type of the file it writes (contract.ArtifactType).
TOY_TASKS: dict[str, str] = {
    "math_sft": "dataset",
    "math_bench": "benchmark",
    "ood_bench": "benchmark",
    "ifeval_bench": "benchmark",
    "mt_bench": "benchmark",
    "corpus": "corpus",
    "preference": "preference",
    "prompts": "prompts",
}


def generate(task: str, n: int, seed: int, **params: Any) -> Iterator[Row]:
    """Yield `n` rows of `task`, deterministically from `seed`."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown toy task {task!r}; choose one of {sorted(_GENERATORS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{task}/{seed}")
    fn = _GENERATORS[task]
    state = {"seen": set()} if task in _DISTINCT else {}
    for _ in range(n):
        yield fn(rng, **state, **params)


def write_toy_data(task: str, n: int, seed: int, out_path: Path, **params: Any) -> Path:
    """Write `n` rows of `task` as JSONL to `out_path` atomically (tmp file + os.replace).

    Same arguments, same bytes: rows are produced by `generate` and serialised with a fixed
    key order. Unknown `params` for the task raise TypeError before anything is written.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(generate(task, n, seed, **params))
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
