"""Reading local datasets and converting known layouts to the project's row formats.

Sources: JSONL (`.jsonl`, `.json` with one object per line), Parquet, an HF `datasets`
`save_to_disk` directory (a Dataset, or a DatasetDict: its `train` split or its only split), or a
directory of such files. Everything is streamed in batches, so memory stays bounded.

Row formats (docs/architecture.md):
    dataset     {"messages": [...], "answer"?: str, "source"?: str}
    preference  {"prompt": [messages], "chosen": str, "rejected": str}
    prompts     {"prompt": [messages], "ground_truth": str, "data_source": str}

Source layouts (`detect_format`):
    chat                    {"messages"|"conversations": [...]} (role/content or ShareGPT from/value)
    problem_solution        {"problem"|"question"|"instruction"|..., "solution"|"response"|..., "answer"?}
    prompt_chosen_rejected  {"prompt"?, "chosen", "rejected"} with strings or message lists (UltraFeedback)
    rl_prompt               {"prompt", "ground_truth"|"answer"|"reward_model": {"ground_truth"}}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Messages = list[dict[str, str]]

FORMATS = ("chat", "problem_solution", "prompt_chosen_rejected", "rl_prompt")

_PROBLEM_KEYS = ("problem", "question", "query", "instruction", "input")
_SOLUTION_KEYS = ("solution", "response", "output", "completion", "generation")
_ANSWER_KEYS = ("ground_truth", "answer", "final_answer", "gold")
_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "model": "assistant",
    "bot": "assistant",
}


class FormatError(ValueError):
    """A row does not fit the layout it was read as."""


# ---------------------------------------------------------------------------- reading


def iter_rows(path: str | Path, batch_rows: int = 1024) -> Iterator[Row]:
    """Yield the rows of a local JSONL / Parquet file or HF `save_to_disk` directory, streaming."""
    path = Path(path)
    if path.is_dir():
        yield from _iter_dir(path, batch_rows)
    elif path.suffix in (".jsonl", ".json", ".ndjson"):
        yield from _iter_jsonl(path)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path, batch_rows)
    elif path.suffix == ".arrow":
        yield from _iter_arrow(path)
    else:
        raise FormatError(
            f"{path}: unknown data file type (expected .jsonl, .parquet, .arrow or a directory)"
        )


def _iter_jsonl(path: Path) -> Iterator[Row]:
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise FormatError(f"{path}:{lineno}: not a JSON object per line ({e})") from e


def _iter_parquet(path: Path, batch_rows: int) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def _iter_arrow(path: Path) -> Iterator[Row]:
    """An Arrow file as written by `datasets` (IPC stream format; file format also accepted)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield from reader.get_batch(i).to_pylist()
            return
        for batch in reader:
            yield from batch.to_pylist()


def _iter_dir(path: Path, batch_rows: int) -> Iterator[Row]:
    if (path / "dataset_dict.json").exists():  # DatasetDict.save_to_disk
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        split = "train" if "train" in splits else splits[0]
        if len(splits) > 1 and split != "train":
            raise FormatError(
                f"{path}: DatasetDict with splits {splits} and no 'train'; point at one split"
            )
        yield from _iter_dir(path / split, batch_rows)
        return
    if (path / "state.json").exists():  # Dataset.save_to_disk
        state = json.loads((path / "state.json").read_text())
        for f in state["_data_files"]:
            yield from _iter_arrow(path / f["filename"])
        return
    files = sorted(
        p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet", ".arrow")
    )
    if not files:
        raise FormatError(
            f"{path}: no .jsonl, .parquet or .arrow files, and not a save_to_disk directory"
        )
    for f in files:
        yield from iter_rows(f, batch_rows)


# ---------------------------------------------------------------------------- detection


def detect_format(row: Row) -> str:
    """The source layout of one row (one of FORMATS)."""
    if "chosen" in row and "rejected" in row:
        return "prompt_chosen_rejected"
    if "messages" in row or "conversations" in row:
        return "chat"
    if "prompt" in row and (_ground_truth(row) is not None):
        return "rl_prompt"
    if any(k in row for k in _PROBLEM_KEYS) and any(k in row for k in _SOLUTION_KEYS):
        return "problem_solution"
    raise FormatError(f"unrecognised row layout with keys {sorted(row)}")


# ---------------------------------------------------------------------------- conversion


def to_messages(value: Any, default_role: str = "user") -> Messages:
    """A prompt as a message list: a string becomes one `default_role` message."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        out = []
        for m in value:
            role = _ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).lower())
            content = m.get("content", m.get("value"))
            if role is None or not isinstance(content, str):
                raise FormatError(f"message without a known role and string content: {m}")
            out.append({"role": role, "content": content})
        return out
    raise FormatError(f"expected a string or a list of messages, got {type(value).__name__}")


def _first(row: Row, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def _ground_truth(row: Row) -> str | None:
    value = _first(row, _ANSWER_KEYS)
    if value is None and isinstance(row.get("reward_model"), dict):
        value = row["reward_model"].get("ground_truth")
    return None if value is None else str(value)


def _response(value: Any) -> str:
    """A chosen/rejected field as the assistant's text: a string, or the last assistant message."""
    if isinstance(value, str):
        return value
    msgs = to_messages(value)
    if not msgs or msgs[-1]["role"] != "assistant":
        raise FormatError("chosen/rejected message list does not end with an assistant message")
    return msgs[-1]["content"]


def to_dataset_row(row: Row, fmt: str) -> Row:
    """Chat (`dataset`) row from a chat or problem/solution row; keeps `answer` and `source`."""
    if fmt == "chat":
        messages = to_messages(row.get("messages", row.get("conversations")))
    elif fmt == "problem_solution":
        problem, solution = _first(row, _PROBLEM_KEYS), _first(row, _SOLUTION_KEYS)
        if not isinstance(problem, str) or not isinstance(solution, str):
            raise FormatError("problem/solution row without string problem and solution")
        messages = [
            {"role": "user", "content": problem},
            {"role": "assistant", "content": solution},
        ]
    else:
        raise FormatError(f"cannot make SFT rows from {fmt!r} rows")
    if not any(m["role"] == "assistant" for m in messages):
        raise FormatError("conversation without an assistant turn")
    out: Row = {"messages": messages}
    answer = _ground_truth(row)
    if answer is not None:
        out["answer"] = answer
    for key in ("source", "data_source"):
        if isinstance(row.get(key), str):
            out["source"] = row[key]
            break
    return out


def to_preference_row(row: Row, fmt: str) -> Row:
    """Preference row; a missing `prompt` is taken from the chosen conversation's turns before the answer."""
    if fmt != "prompt_chosen_rejected":
        raise FormatError(f"cannot make preference rows from {fmt!r} rows")
    if row.get("prompt") is not None:
        prompt = to_messages(row["prompt"])
    elif isinstance(row["chosen"], list):
        prompt = to_messages(row["chosen"])[:-1]
    else:
        raise FormatError("preference row without a prompt")
    if not prompt:
        raise FormatError("preference row with an empty prompt")
    return {
        "prompt": prompt,
        "chosen": _response(row["chosen"]),
        "rejected": _response(row["rejected"]),
    }


def to_prompts_row(row: Row, fmt: str) -> Row:
    """RL prompt row from an RL row, or from a problem/solution or chat row that has a reference answer."""
    truth = _ground_truth(row)
    if truth is None:
        raise FormatError("RL prompt row without a ground truth answer")
    if fmt == "rl_prompt":
        prompt = to_messages(row["prompt"])
    elif fmt == "problem_solution":
        prompt = to_messages(_first(row, _PROBLEM_KEYS))
    elif fmt == "chat":
        msgs = to_messages(row.get("messages", row.get("conversations")))
        prompt = msgs[
            : next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
        ]
    else:
        raise FormatError(f"cannot make RL prompt rows from {fmt!r} rows")
    source = row.get("data_source") or row.get("source") or "unknown"
    return {"prompt": prompt, "ground_truth": truth, "data_source": str(source)}


CONVERTERS = {"dataset": to_dataset_row, "preference": to_preference_row, "prompts": to_prompts_row}


def convert(row: Row, fmt: str, output_type: str) -> Row:
    """Convert one source row (layout `fmt`, or "auto") to the row format of `output_type`."""
    if output_type not in CONVERTERS:
        raise ValueError(f"no row conversion to artifact type {output_type!r}")
    if fmt == "auto":
        fmt = detect_format(row)
    return CONVERTERS[output_type](row, fmt)


def with_system_prompt(messages: Messages, system_prompt: str | None) -> Messages:
    """Prepend a system message when there is a prompt and the conversation has none."""
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]
