"""Plan-time checks of declared data, so data mistakes fail at `--plan`, not after training.

1. Every local data file is read once and each row checked against the format its consumers
   read (docs/architecture.md "Data row formats"); the first bad row is reported as
   `file:line`. A file that passed is remembered by its content hash (a small JSON file under
   `$PSFT_CACHE_DIR`, default `~/.cache/psft-orchestrator/row-checks/`), so a large file is
   read once, not at every plan.
2. Where a dataset's size is known (a toy `n`, a counted file), a training stage whose train
   batch it cannot fill fails with the stage's file:line. A filter only drops rows, so its
   input size bounds what reaches the stages after it: a bound below the batch fails too.

Input to a `filter` stage is only counted: turning foreign layouts into our rows, and dropping
rows that do not convert, is the filter's job.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from psft_orchestrator.envs import cache_dir
from psft_orchestrator.spec.errors import Loc, SpecError

from .planner import Node, Plan

CHECKS_VERSION = 1  # bump when a row check changes, so cached verdicts are redone
TRAIN_KINDS = ("sft", "psft", "dft", "iwsft", "dpo", "grpo")
ROLES = ("system", "user", "assistant")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")

Row = dict[str, Any]


# ---------------------------------------------------------------- one row


def _messages_problem(msgs: Any, key: str) -> str | None:
    if not isinstance(msgs, list) or not msgs:
        return f"{key!r} must be a non-empty list of {{role, content}} messages"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"{key}[{i}] is not a {{role, content}} mapping"
        if m.get("role") not in ROLES:
            return (
                f"{key}[{i}] has role {m.get('role')!r}; expected one of {', '.join(ROLES)} "
                "(a filter stage converts other role names such as bot or gpt)"
            )
        if not isinstance(m.get("content"), str):
            return f"{key}[{i}] has no string 'content'"
    return None


def dataset_row_problem(row: Row) -> str | None:
    """SFT rows are read as they are: `messages` with our three roles and an assistant turn."""
    if "messages" not in row:
        return (
            f"chat row without 'messages' (keys: {', '.join(sorted(row)) or 'none'}); an SFT "
            'row is {"messages": [{"role": ..., "content": ...}, ...]} (a filter stage '
            "converts other layouts)"
        )
    problem = _messages_problem(row["messages"], "messages")
    if problem:
        return problem
    if not any(m["role"] == "assistant" for m in row["messages"]):
        return "no assistant turn in 'messages': the row has nothing to train on"
    return None


def _convertible(output_type: str) -> Callable[[Row], str | None]:
    """DPO and GRPO convert any layout `data.formats` knows; a row it cannot convert is bad."""

    def problem(row: Row) -> str | None:
        from psft_orchestrator.data.formats import FormatError, convert

        try:
            convert(row, "auto", output_type)
        except (FormatError, KeyError, TypeError) as e:
            return f"{e} (keys: {', '.join(sorted(row)) or 'none'})"
        return None

    return problem


def benchmark_row_problem(row: Row) -> str | None:
    prompt = row.get("prompt")
    if prompt is None:
        return f"benchmark row without 'prompt' (keys: {', '.join(sorted(row)) or 'none'})"
    if not isinstance(prompt, str):
        problem = _messages_problem(prompt, "prompt")
        if problem:
            return problem
    if row.get("answer") is None and row.get("checks") is None:
        return "benchmark row with neither 'answer' nor 'checks': nothing to grade against"
    return None


def corpus_row_problem(row: Row) -> str | None:
    if not isinstance(row.get("text"), str):
        return f"corpus row without a string 'text' (keys: {', '.join(sorted(row)) or 'none'})"
    return None


ROW_CHECKS: dict[str, Callable[[Row], str | None]] = {
    "dataset": dataset_row_problem,
    "preference": _convertible("preference"),
    "prompts": _convertible("prompts"),
    "benchmark": benchmark_row_problem,
    "corpus": corpus_row_problem,
}


# ---------------------------------------------------------------- one file


def _located_rows(path: Path) -> Iterator[tuple[Loc, str, Any]]:
    """(location, how to name the row, row) for every row; JSONL rows keep their line."""
    files = [path]
    if path.is_dir() and not (path / "state.json").exists():
        files = sorted(p for p in path.iterdir() if p.suffix in JSONL_SUFFIXES) or [path]
    for f in files:
        if f.is_file() and f.suffix in JSONL_SUFFIXES:
            with f.open(errors="replace") as lines:
                for lineno, line in enumerate(lines, 1):
                    if line.strip():
                        yield Loc(str(f), lineno), "row", _json_row(line, Loc(str(f), lineno))
        else:
            from psft_orchestrator.data.formats import FormatError, iter_rows

            try:
                for i, row in enumerate(iter_rows(f)):
                    yield Loc(str(f)), f"row {i}", row
            except FormatError as e:
                raise SpecError.one(Loc(str(f)), "", str(e)) from None


def _json_row(line: str, loc: Loc) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise SpecError.one(loc, "", f"not a JSON object per line ({e.msg})") from None


def scan_file(path: Path, name: str, row_type: str | None) -> int:
    """Rows in a local data file; with a `row_type`, the first row that does not fit raises."""
    check = ROW_CHECKS.get(row_type) if row_type else None
    n = 0
    for loc, what, row in _located_rows(path):
        n += 1
        if check is None:
            continue
        problem = check(row) if isinstance(row, dict) else "not a JSON object"
        if problem:
            raise SpecError.one(loc, f"datasets.{name}", f"{what} does not fit: {problem}")
    return n


def _cache_file(content_hash: str, row_type: str | None) -> Path:
    return (
        cache_dir()
        / "row-checks"
        / f"{content_hash[:32]}-{row_type or 'count'}-v{CHECKS_VERSION}.json"
    )


_seen: dict[tuple[str, str | None], int] = {}


def checked_rows(path: Path, name: str, content_hash: str, row_type: str | None) -> int:
    """`scan_file`, remembered by content hash in this process and on disk."""
    key = (content_hash, row_type)
    if key in _seen:
        return _seen[key]
    cache = _cache_file(content_hash, row_type)
    try:
        n = int(json.loads(cache.read_text())["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        n = scan_file(path, name, row_type)
        _write_cache(cache, {"rows": n, "path": str(path)})
    _seen[key] = n
    return n


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache we cannot write only costs a re-read next time


# ---------------------------------------------------------------- the plan


def check_data(plan: Plan) -> None:
    """Check every declared local file and every training batch; raise SpecError."""
    bounds: dict[str, tuple[int, str]] = {}  # node id -> (max rows of its data, why we know)
    for node in plan.nodes:
        for slot, ref in node.inputs.items():
            if slot in node.parents:
                continue
            refs = ref if isinstance(ref, list) else [ref]
            hashes = node.input_hashes.get(slot)
            hashes = hashes if isinstance(hashes, list) else [hashes]
            for r, h in zip(refs, hashes, strict=True):
                rows = _declared_rows(plan, node, r, h)
                if slot == "data" and rows is not None:
                    bounds.setdefault(node.id, (rows, f"{r.name!r} has {rows} rows"))
        size = _data_size(node, bounds)
        if node.kind == "filter" and size is not None:
            bounds[node.id] = (size[0], f"at most {size[0]} rows leave filter {node.id!r}")
        _check_batch(node, size)


def _declared_rows(plan: Plan, node: Node, ref: Any, content_hash: str | None) -> int | None:
    toy = plan.toy_inputs.get(ref.name)
    if toy is not None:
        return getattr(toy.decl, "n", None) if toy.what == "dataset" else None
    if ref.type == "model" or ref.path.startswith("hf:") or not content_hash:
        return None
    if ref.name in plan.prepared_inputs:  # hub data: its first row was checked when planned
        return None
    row_type = None if node.kind == "filter" else ref.type
    return checked_rows(Path(ref.path), ref.name, content_hash, row_type)


def _data_size(node: Node, bounds: dict[str, tuple[int, str]]) -> tuple[int, str] | None:
    """(at most how many rows, why we know) of the node's `data` input, when known."""
    parent = node.parents.get("data")
    return bounds.get(parent.id if parent is not None else node.id)


def _check_batch(node: Node, size: tuple[int, str] | None) -> None:
    batch = getattr(node.stage_model, "train_batch_size", None)
    if node.kind not in TRAIN_KINDS or size is None or batch is None or size[0] >= batch:
        return
    raise SpecError.one(
        node.loc,
        f"{node.id}.train_batch_size",
        f"train_batch_size {batch} is larger than the data ({size[1]}): not one train batch "
        f"can be filled; lower train_batch_size to at most {size[0]} or give the stage more rows",
    )
