"""Hub dataset schemas -> the project's row formats, and what to say when a schema does not fit.

Every dataset the paper specs name is read in the columns its dataset card gives
(docs/data.md lists them). SFT, preference and RL rows go through `formats.convert` (chat,
problem/solution, UltraFeedback pairs, verl RL rows); benchmark rows are converted here, one small
function per schema, to `{"prompt", "answer", "task", "choices"?, "checks"?, "reference"?}`.

A spec's `columns: {prompt: question, answer: answer}` maps our field names to the source's
columns, for datasets no schema here knows; only the mapped columns are kept.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from . import formats
from .formats import FormatError, Row

# Our field names that `columns:` may map (see docs/data.md).
COLUMN_FIELDS = (
    "prompt",
    "response",
    "messages",
    "answer",
    "chosen",
    "rejected",
    "choices",
    "reference",
    "checks",
)

# Bump when a conversion changes: prepared (converted) copies of hub data are keyed by it.
SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------- column mapping


def apply_columns(row: Row, columns: dict[str, str]) -> Row:
    """Row with our field names, taken from the mapped source columns (only those)."""
    missing = sorted(src for src in columns.values() if src not in row)
    if missing:
        raise FormatError(
            f"missing column(s) {missing} named in columns: (the data has {sorted(row)})"
        )
    return {ours: row[src] for ours, src in columns.items()}


# ---------------------------------------------------------------------------- benchmarks


def _gsm8k_answer(text: Any) -> str:
    """gsm8k's reference solutions end in `#### 42`: the number after the marker."""
    text = str(text)
    return text.rsplit("####", 1)[1].strip().replace(",", "") if "####" in text else text.strip()


def _first_turn(prompt: Any) -> Any:
    """MT-Bench style prompts are a list of user turns: the first one (later turns need replies)."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, str) for t in prompt):
        return prompt[0]
    if (
        isinstance(prompt, list)
        and prompt
        and isinstance(prompt[0], dict)
        and "role" not in prompt[0]
    ):
        return str(prompt[0].get("content", ""))  # arena-hard `turns: [{content}]`
    return prompt


def _ours(row: Row) -> Row:
    out: Row = {"prompt": _first_turn(row["prompt"]), "task": str(row.get("task") or "benchmark")}
    if (
        isinstance(row["prompt"], list)
        and len(row["prompt"]) > 1
        and isinstance(out["prompt"], str)
    ):
        out["turns"] = [_first_turn([t]) for t in row["prompt"]]  # MT-Bench: the judge runs both
    for key in ("answer", "choices", "checks", "reference"):
        if row.get(key) not in (None, "", []):
            out[key] = row[key]
    if isinstance(out.get("reference"), list):  # MT-Bench: one reference per turn
        out["reference"] = out["reference"][0] if out["reference"] else None
    if "answer" in out and not isinstance(out["answer"], (str, int)):
        out["answer"] = str(out["answer"])
    return out


def _problem_answer(row: Row) -> Row:  # MATH-500, AIME 2024/2025, AMC
    return {"prompt": row["problem"], "answer": str(row["answer"]), "task": "math"}


def _question_answer(row: Row) -> Row:  # gsm8k (`#### 42`), Minerva
    return {"prompt": row["question"], "answer": _gsm8k_answer(row["answer"]), "task": "math"}


def _olympiad(row: Row) -> Row:  # OlympiadBench: final_answer is a list of LaTeX strings
    answers = row["final_answer"]
    answer = (
        ", ".join(a.strip().strip("$") for a in answers) if isinstance(answers, list) else answers
    )
    context = row.get("context")
    prompt = f"{context}\n\n{row['question']}" if context else row["question"]
    return {"prompt": prompt, "answer": str(answer), "task": "math"}


def _mc(prompt: str, choices: list[str], answer: str, task: str) -> Row:
    return {
        "prompt": prompt,
        "choices": [str(c) for c in choices],
        "answer": str(answer),
        "task": task,
    }


def _truthfulqa_mc1(row: Row) -> Row:
    t = row["mc1_targets"]
    return _mc(
        row["question"], t["choices"], t["choices"][list(t["labels"]).index(1)], "truthfulqa"
    )


def _arc(row: Row) -> Row:
    c = row["choices"]
    return _mc(
        row["question"], c["text"], c["text"][list(c["label"]).index(row["answerKey"])], "arc"
    )


def _mmlu_pro(row: Row) -> Row:
    return _mc(
        row["question"], row["options"], row["options"][int(row["answer_index"])], "mmlu_pro"
    )


def _supergpqa(row: Row) -> Row:
    return _mc(row["question"], row["options"], row["answer"], "supergpqa")


def _gpqa(row: Row) -> Row:
    """GPQA stores the correct answer apart: options in a fixed per-question shuffled order."""
    correct = row["Correct Answer"].strip()
    options = [correct, *(row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3))]
    seed = int(hashlib.sha256(row["Question"].encode()).hexdigest()[:8], 16)
    random.Random(seed).shuffle(options)
    return _mc(row["Question"].strip(), options, correct, "gpqa")


def _head_qa(row: Row) -> Row:
    texts = {a["aid"]: a["atext"] for a in row["answers"]}
    return _mc(row["qtext"], list(texts.values()), texts[row["ra"]], "head_qa")


def _alpaca_eval(row: Row) -> Row:  # the baseline output is the judge's reference
    return {"prompt": row["instruction"], "reference": row.get("output"), "task": "alpaca_eval"}


# IFEval instruction ids that the rule checker (data.toy.checks) implements.
def _ifeval_check(instruction: str, kw: dict[str, Any]) -> list[dict[str, Any]] | None:
    simple = {
        "change_case:english_capital": "uppercase",
        "change_case:english_lowercase": "lowercase",
        "punctuation:no_comma": "no_comma",
        "startend:quotation": "quotation",
    }
    if instruction in simple:
        return [{"type": simple[instruction]}]
    if instruction == "startend:end_checker" and kw.get("end_phrase"):
        return [{"type": "ends_with", "value": kw["end_phrase"]}]
    if instruction == "keywords:existence" and kw.get("keywords"):
        return [{"type": "contains", "value": k} for k in kw["keywords"]]
    if instruction == "length_constraints:number_words" and kw.get("num_words"):
        relation = {"at least": "at_least", "less than": "less_than"}.get(kw.get("relation"))
        return [{"type": "word_count", "value": int(kw["num_words"]), "relation": relation}]
    return None


def _ifeval(row: Row) -> Row:
    """IFEval: the instructions the rule checker knows become `checks`; the rest are listed in
    `unchecked` (kept visible rather than silently counted as followed)."""
    checks, unchecked = [], []
    kwargs = row.get("kwargs") or [{}] * len(row["instruction_id_list"])
    for instruction, kw in zip(row["instruction_id_list"], kwargs, strict=True):
        found = _ifeval_check(instruction, {k: v for k, v in (kw or {}).items() if v is not None})
        checks.extend(found or [])
        if found is None:
            unchecked.append(instruction)
    return {"prompt": row["prompt"], "checks": checks, "unchecked": unchecked, "task": "ifeval"}


# (name, required columns: each entry one column or alternatives "a|b", converter). Order
# matters: the first schema whose columns are all present converts the row.
BenchmarkSchema = tuple[str, tuple[str, ...], Callable[[Row], Row]]
BENCHMARK_SCHEMAS: list[BenchmarkSchema] = [
    ("benchmark rows", ("prompt", "answer|checks|reference"), _ours),
    ("ifeval", ("prompt", "instruction_id_list"), _ifeval),
    (
        "mt_bench / arena-hard",
        ("prompt|turns", "category"),
        lambda r: _ours({"prompt": r.get("prompt", r.get("turns")), **r}),
    ),
    ("truthful_qa multiple_choice", ("question", "mc1_targets"), _truthfulqa_mc1),
    ("ai2_arc", ("question", "choices", "answerKey"), _arc),
    ("mmlu_pro", ("question", "options", "answer_index"), _mmlu_pro),
    ("supergpqa", ("question", "options", "answer"), _supergpqa),
    ("gpqa", ("Question", "Correct Answer", "Incorrect Answer 1"), _gpqa),
    ("head_qa", ("qtext", "answers", "ra"), _head_qa),
    ("olympiadbench", ("question", "final_answer"), _olympiad),
    ("math (MATH-500, AIME, AMC)", ("problem", "answer"), _problem_answer),
    ("gsm8k / minerva", ("question", "answer"), _question_answer),
    ("alpaca_eval", ("instruction",), _alpaca_eval),
]


def _has(row: Row, column: str) -> bool:
    return any(row.get(c) not in (None, "") for c in column.split("|"))


def to_benchmark_row(row: Row) -> Row:
    for _name, required, fn in BENCHMARK_SCHEMAS:
        if all(_has(row, c) for c in required):
            try:
                return fn(row)
            except (KeyError, ValueError, IndexError, TypeError) as e:
                raise FormatError(f"{_name} row that does not fit its schema ({e!r})") from None
    raise FormatError(f"no benchmark schema fits the columns {sorted(row)}")


# ---------------------------------------------------------------------------- all types

# Training schemas, for the missing-columns message (formats.detect_format converts them).
TRAINING_SCHEMAS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "dataset": [
        ("chat (ultrachat_200k)", ("messages|conversations",)),
        (
            "problem/solution (OpenR1-Math)",
            (
                "problem|question|query|instruction|input|prompt",
                "solution|response|output|completion|generation",
            ),
        ),
    ],
    "preference": [("chosen/rejected (ultrafeedback_binarized)", ("chosen", "rejected"))],
    "prompts": [
        ("RL prompts (DAPO-Math)", ("prompt", "ground_truth|answer|reward_model")),
        ("problem/answer (MATH-style)", ("problem|question", "answer|final_answer")),
    ],
    "corpus": [("text corpus", ("text",))],
}


def _required(output_type: str) -> list[tuple[str, tuple[str, ...]]]:
    if output_type == "benchmark":
        return [(name, req) for name, req, _ in BENCHMARK_SCHEMAS]
    return TRAINING_SCHEMAS[output_type]


def missing_columns(columns: list[str], output_type: str) -> str:
    """Which columns the nearest schema of `output_type` lacks, said for a person."""
    present = {c: "x" for c in columns}
    best = min(
        _required(output_type),
        key=lambda s: sum(not _has(present, c) for c in s[1]),
    )
    lacking = [c.replace("|", " or ") for c in best[1] if not _has(present, c)]
    return (
        f"columns {sorted(columns)} cannot be converted to {output_type} rows: "
        f"the nearest known schema, {best[0]}, needs {lacking}; map them with "
        f"`columns: {{{', '.join(f'{f}: COLUMN' for f in _fields(output_type))}}}`"
    )


def _fields(output_type: str) -> tuple[str, ...]:
    return {
        "dataset": ("prompt", "response"),
        "preference": ("prompt", "chosen", "rejected"),
        "prompts": ("prompt", "answer"),
        "benchmark": ("prompt", "answer"),
        "corpus": ("text",),
    }[output_type]


def _problem_to_prompt(row: Row) -> Row:
    """A problem/answer row (no solution) as an RL prompt row; gsm8k answers lose their `####`."""
    problem = row.get("problem") or row.get("question")
    return {
        "prompt": problem,
        "ground_truth": _gsm8k_answer(row.get("answer") or row.get("final_answer")),
        "data_source": row.get("data_source") or row.get("source") or "unknown",
    }


def _assistant(text: Any) -> dict[str, str]:
    return {"role": "assistant", "content": str(text)}


def convert_row(
    row: Row, output_type: str, fmt: str = "auto", columns: dict[str, str] | None = None
) -> Row:
    """One source row (hub schema, or mapped by `columns`) as a row of `output_type`."""
    if columns:
        row = apply_columns(row, columns)
    if output_type == "benchmark":
        return to_benchmark_row(row)
    if output_type == "corpus":
        if not isinstance(row.get("text"), str):
            raise FormatError("corpus row without a string `text`")
        return {"text": row["text"]}
    if output_type == "dataset" and fmt == "auto" and _has(row, "prompt") and _has(row, "response"):
        row = {
            **row,
            "messages": [*formats.to_messages(row["prompt"]), _assistant(row["response"])],
        }
    if (
        output_type == "prompts"
        and fmt == "auto"
        and "prompt" not in row
        and _has(row, "problem|question")
        and _has(row, "answer|final_answer")
    ):
        row = _problem_to_prompt(row)
    return formats.convert(row, fmt, output_type)


def check_convertible(row: Row, output_type: str, fmt: str, columns: dict[str, str] | None) -> None:
    """Raise FormatError naming the missing columns when `row` cannot become `output_type`."""
    try:
        convert_row(row, output_type, fmt, columns)
    except FormatError as e:
        if columns:
            raise
        raise FormatError(f"{missing_columns(list(row), output_type)} ({e})") from None
