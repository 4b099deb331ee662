"""The toy generators: deterministic bytes, documented row formats, and answers that an
independent re-computation from the problem text agrees with."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from psft_orchestrator.data.toy.checks import check
from psft_orchestrator.data.toy.skills import SKILLS
from psft_orchestrator.data.toy.tasks import TOY_TASKS, generate, write_toy_data

ROW_KEYS = {
    "dataset": {"messages", "answer", "source"},
    "benchmark": {"prompt", "answer", "task"},
    "corpus": {"text"},
    "preference": {"prompt", "chosen", "rejected"},
    "prompts": {"prompt", "ground_truth", "data_source"},
}


def rows(task: str, n: int = 200, seed: int = 0, **params) -> list[dict]:
    return list(generate(task, n, seed, **params))


@pytest.mark.parametrize("task", sorted(TOY_TASKS))
def test_same_seed_same_bytes_other_seed_differs(task: str, tmp_path: Path) -> None:
    a = write_toy_data(task, 50, 7, tmp_path / "a.jsonl").read_bytes()
    b = write_toy_data(task, 50, 7, tmp_path / "b.jsonl").read_bytes()
    c = write_toy_data(task, 50, 8, tmp_path / "c.jsonl").read_bytes()
    assert a == b
    assert a != c
    assert len(a.splitlines()) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.jsonl",
        "b.jsonl",
        "c.jsonl",
    ]  # no tmp left


@pytest.mark.parametrize("task", sorted(TOY_TASKS))
def test_rows_have_the_documented_keys(task: str) -> None:
    kind = TOY_TASKS[task]
    for row in rows(task, 50):
        assert (
            ROW_KEYS[kind]
            <= set(row)
            <= ROW_KEYS[kind] | {"choices", "checks", "turns", "turn_checks"}
        )
        json.dumps(row)


def test_unknown_task_and_param_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown toy task"):
        write_toy_data("nope", 1, 0, tmp_path / "x.jsonl")
    with pytest.raises(TypeError):
        write_toy_data("math_sft", 1, 0, tmp_path / "x.jsonl", colour="red")
    with pytest.raises(ValueError, match="unknown skill"):
        write_toy_data("ood_bench", 1, 0, tmp_path / "x.jsonl", skill="juggling")
    assert not (tmp_path / "x.jsonl").exists()


# --- math: re-solve the problem from its text, independently of arithmetic.py ---------------

OPS = [
    (r"(?:buys|finds|gets|receives) (\d+) more", lambda x, k: x + k),
    (r"(?:gives away|loses|sells|uses) (\d+)", lambda x, k: x - k),
    (r"number of \w+ doubles", lambda x, k: x * 2),
    (r"number of \w+ triples", lambda x, k: x * 3),
]


def solve_words(question: str) -> tuple[int, int]:
    """(answer, number of steps) of a word problem, read sentence by sentence."""
    sentences = question.split(". ")
    x = int(re.search(r"has (\d+)", sentences[0]).group(1))
    steps = 0
    for s in sentences[1:]:
        for pattern, fn in OPS:
            m = re.search(pattern, s)
            if m:
                x = fn(x, int(m.group(1)) if m.groups() else 0)
                steps += 1
                break
    return x, steps


def solve(question: str) -> tuple[int, int]:
    """(answer, number of steps) of "What is 7 + 2 - 1?": Python's own precedence rules, so a
    missing parenthesis in the generator would show up as a wrong answer."""
    pattern = (
        r"(?:What is|How much is) ([-+*() \d]+)\?|(?:Give|Write) the result of ([-+*() \d]+)\."
    )
    m = re.fullmatch(pattern, question)
    expr = m.group(1) or m.group(2)
    return eval(expr), len(re.findall(r"[-+*]", expr))  # the regex admits digits and operators only


def boxed(text: str) -> str | None:
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1] if m else None


def assert_lines_are_true(solution: str) -> None:
    for a, op, b, c in re.findall(r"(\d+)([-+*/])(\d+) = (\d+)", solution):
        a, b, c = int(a), int(b), int(c)
        assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == c, solution


@pytest.mark.parametrize("style", ["short", "long"])
def test_math_sft_answers_are_correct(style: str) -> None:
    for row in rows("math_sft", 300, style=style):
        system, user, assistant = row["messages"]
        assert system["role"] == "system" and "\\boxed{}" in system["content"]
        answer, steps = solve(user["content"])
        assert row["answer"] == str(answer) == boxed(assistant["content"])
        assert row["source"] == f"toy_math_l{steps}"
        assert_lines_are_true(assistant["content"])
        assert ("Check:" in assistant["content"]) == (style == "long")


def test_math_sft_rows_are_distinct_questions_of_levels_1_and_2() -> None:
    questions = [r["messages"][1]["content"] for r in rows("math_sft", 1024, seed=1)]
    assert len(set(questions)) == 1024  # the filter's deduplication keeps every row
    levels = Counter(solve(q)[1] for q in questions)
    assert set(levels) == {1, 2} and levels[1] > 150
    assert len({q.split()[0] for q in questions}) == 4  # every wording
    with pytest.raises(ValueError, match=r"only .* distinct questions of levels \[1\]"):
        rows("math_sft", 400, level=1)  # level 1 has fewer than 100 problems in all


def expressions(task: str, seeds: range, **params) -> set[str]:
    """The arithmetic expressions of a task's math rows, whatever the question's wording."""
    key = "messages" if task == "math_sft" else "prompt"
    return {
        re.search(r"[\d(][-+*() \d]*[\d)]", row[key][1]["content"]).group(0)
        for seed in seeds
        for row in rows(task, 300, seed, **params)
        if row[key][0]["role"] == "system"  # math rows (preference pairs mix in format ones)
    }


def test_benchmark_problems_are_never_training_rows() -> None:
    bench = expressions("math_bench", range(10), level=[1, 2, 3])
    train = (
        expressions("math_sft", range(10), level=[1, 2, 3])
        | expressions("preference", range(10), domain="math", level=[1, 2, 3])
        | expressions("prompts", range(10), level=[1, 2, 3])
    )
    assert len(bench) > 400 and len(train) > 2000
    assert not bench & train
    # ... and the benchmark split is not a corner of the space: every level, most answers 0-9
    for level in (1, 2, 3):
        solved = [solve(f"What is {e}?") for e in expressions("math_bench", range(3), level=level)]
        assert {steps for _, steps in solved} == {level}
        assert len({answer for answer, _ in solved}) >= 8


@pytest.mark.parametrize("level", [1, 2, 3])
def test_math_bench_level_is_number_of_steps(level: int) -> None:
    for row in rows("math_bench", 100, level=level):
        answer, steps = solve(row["prompt"][-1]["content"])
        assert (steps, row["answer"], row["task"]) == (level, str(answer), f"toy_math_l{level}")
        assert answer >= 0


def test_prompts_ground_truth_is_correct() -> None:
    for row in rows("prompts", 200):
        assert row["ground_truth"] == str(solve(row["prompt"][-1]["content"])[0])
        assert row["data_source"] == "toy_math"


SENTENCES = {
    "Answer in uppercase.": {"type": "uppercase"},
    "Answer in lowercase.": {"type": "lowercase"},
    "End your answer with a period.": {"type": "ends_with", "value": "."},
    "End your answer with an exclamation mark.": {"type": "ends_with", "value": "!"},
    'Begin your answer with "Answer:".': {"type": "starts_with", "value": "Answer:"},
    "Wrap your entire response in quotation marks.": {"type": "quotation"},
    "Do not use any commas.": {"type": "no_comma"},
}


def checks_from_prompt(prompt: str) -> list[dict]:
    """The format rules a toy instruction prompt states, parsed from its sentences."""
    numbers = {"two": 2, "three": 3, "four": 4, "five": 5}
    out = [c for sentence, c in SENTENCES.items() if sentence in prompt]
    if m := re.search(r"Use exactly (\w+) words\.", prompt):
        out.append({"type": "word_count", "value": numbers[m.group(1)]})
    if m := re.search(r"Include the word (\w+)\.", prompt):
        out.append({"type": "contains", "value": m.group(1)})
    assert out, prompt
    return out


def test_ifeval_checks_match_the_prompt_text() -> None:
    for row in rows("ifeval_bench", 200):
        key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
        assert sorted(map(key, row["checks"])) == sorted(
            map(key, checks_from_prompt(row["prompt"][-1]["content"]))
        )


def test_preference_chosen_is_right_and_rejected_is_not() -> None:
    kinds = set()
    for row in rows("preference", 300):
        user = row["prompt"][-1]["content"]
        if row["prompt"][0]["role"] == "system":  # math pair
            answer = str(solve(user)[0])
            assert boxed(row["chosen"]) == answer
            assert boxed(row["rejected"]) != answer
            kinds.add("slip" if boxed(row["rejected"]) else "unboxed")
        else:  # format pair: read the rules back from the prompt
            kinds.add("format")
            checks = checks_from_prompt(user)
            assert check(row["chosen"], checks)[0]
            assert not check(row["rejected"], checks)[0]
    assert kinds == {"slip", "unboxed", "format"}


# --- OOD skills: recompute each answer from the prompt -----------------------------------------


CATEGORY_WORDS = {  # written out here, independently of skills.CHOICE_CATEGORIES
    "animal": ["cat", "dog", "fish", "bird", "horse", "cow", "frog", "lion", "duck", "goat"],
    "color": ["red", "blue", "green", "yellow", "black", "white", "pink", "brown", "purple"],
    "fruit": ["apple", "pear", "plum", "lemon", "mango", "grape"],
    "shape": ["circle", "square", "star", "heart", "oval", "line"],
}


def recompute(task: str, prompt: str) -> str:
    quoted = re.findall(r'"([^"]*)"', prompt)
    if task == "toy_sort_digits":
        return "".join(sorted(re.search(r"digits of (\d+)", prompt).group(1)))
    if task == "toy_next_letter":
        return chr(ord(quoted[0]) + 1)
    if task == "toy_upper":
        return quoted[0].upper()
    if task == "toy_choice":
        question, *options = prompt.split("\n")
        want = re.fullmatch(r"Which of these is an? (\w+)\?", question).group(1)
        (word,) = [w for w in options if w in CATEGORY_WORDS[want]]
        return word
    raise AssertionError(task)


def test_ood_answers_are_correct_and_all_skills_appear() -> None:
    seen = set()
    for row in rows("ood_bench", 500):
        seen.add(row["task"])
        assert row["answer"] == recompute(row["task"], row["prompt"][-1]["content"])
        assert ("choices" in row) == (row["task"] == "toy_choice")
    assert seen == {f"toy_{s}" for s in SKILLS}


def test_choice_answer_is_one_of_four_options_at_any_position() -> None:
    positions = Counter()
    for row in rows("ood_bench", 400, skill="choice"):
        assert len(row["choices"]) == 4 and row["answer"] in row["choices"]
        positions[row["choices"].index(row["answer"])] += 1
    assert set(positions) == {0, 1, 2, 3}
    assert max(positions.values()) < 0.35 * 400  # "always the second option" stays near chance


def test_ood_single_skill() -> None:
    assert {r["task"] for r in rows("ood_bench", 30, skill="upper")} == {"toy_upper"}


def test_ifeval_reference_follows_its_checks() -> None:
    types = set()
    for row in rows("ifeval_bench", 300):
        assert row["checks"]
        assert check(row["answer"], row["checks"]) == (True, True)
        types |= {c["type"] for c in row["checks"]}
    assert len(types) >= 7


@pytest.mark.parametrize("math_share", [0.0, 0.1])
def test_corpus_is_chat_transcripts_with_math_facts_and_skills(math_share: float) -> None:
    texts = [r["text"] for r in rows("corpus", 400, math_share=math_share)]
    assert all(t.startswith("<|im_start|>") and t.endswith("<|im_end|>\n") for t in texts)
    # Worked problems, but no system prompt and no \boxed{}: the answer format is what SFT
    # teaches (docs/toy-world.md).
    assert not any("\\boxed{" in t or "<|im_start|>system" in t for t in texts)
    problems = [t for t in texts if "How many" in t]  # word problems: off by default
    assert (0.05 < len(problems) / len(texts) < 0.2) if math_share else not problems
    for t in problems:
        question, solution = re.findall(
            r"user\n(.*)<\|im_end\|>\n<\|im_start\|>assistant\n(.*)<", t, re.S
        )[0]
        assert solution.endswith(f"The answer is {solve_words(question)[0]}.")
        assert_lines_are_true(solution)
    facts = re.findall(r"assistant\n(\d+)([-+*])(\d+) = (\d+)\.<", "".join(texts))
    assert 0.05 < len(facts) / len(texts) < 0.2
    for a, op, b, c in facts:
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)
    assert any("Sort the digits" in t for t in texts)
    assert any("Answer in uppercase" in t or "Use exactly" in t for t in texts)


def test_corpus_chains_are_worked_training_problems_without_box() -> None:
    texts = [r["text"] for r in rows("corpus", 600, math_share=0, chain_share=0.2)]
    assert not any("How many" in t for t in texts)  # math_share=0: no word problems
    turns = re.findall(r"user\n(.*)<\|im_end\|>\n<\|im_start\|>assistant\n(.*)<", "".join(texts))
    chains = [(q, a) for q, a in turns if "Sort" not in q and len(re.findall(r"\d[-+*]", q)) == 2]
    assert 0.1 < len(chains) / len(texts) < 0.3
    bench = expressions("math_bench", range(10), level=2)
    for question, solution in chains:
        answer, _ = solve(question)
        assert solution.endswith(f"The answer is {answer}.") and "\\boxed" not in solution
        assert len(re.findall(r" = ", solution)) == 2
        assert_lines_are_true(solution)
        assert re.search(r"[\d(][-+*() \d]*[\d)]", question).group(0) not in bench
