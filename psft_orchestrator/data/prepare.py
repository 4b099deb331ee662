"""Declared datasets that need converting: checked at plan time, converted once at run time.

A declared dataset is *prepared* when it comes from the hub (`hf_id:` alone, read from the local
cache), from a hub-layout directory at `path:`, or names a `config:` or `columns:`. The planner
resolves its config and split to files, reads its first row and converts it (so a missing column
fails `--plan`), and keys it by content (`hub.source_key`). The run layer then streams all rows
through the conversion into `<workspace>/inputs/hub-data/<key>.jsonl` in our row format, once,
atomically; every backend reads that file. Plain JSONL / parquet / `save_to_disk` paths with no
`config:` or `columns:` are read by the backends as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import formats, hub, schemas
from .formats import FormatError, Row


@dataclass(frozen=True)
class PreparedInput:
    """A declared dataset to convert into the workspace before the nodes that read it run."""

    name: str
    type: str
    fmt: str
    columns: dict[str, str]
    key: str  # content key: the fingerprint's input hash and the prepared file's name
    source: hub.HubSource | None  # a hub-layout directory or snapshot ...
    file: Path | None = None  # ... or one local file (with `columns:`)
    missing: str | None = None  # why the dataset cannot be found (not in the cache)
    declared_at: Any = None  # the spec.errors.Loc of its declaration, for plan-time errors

    def path(self, workspace: Path) -> Path:
        return workspace / "inputs" / "hub-data" / f"{self.key[:16]}.jsonl"


def needs_preparing(decl: Any, path: Path | None) -> bool:
    if decl.config is not None or decl.columns:
        return True
    return path is None or hub.is_hub_layout(path)


def _selection(decl: Any, typ: str) -> dict[str, Any]:
    return {
        "type": typ,
        "format": decl.format,
        "columns": dict(decl.columns),
        "schema_version": schemas.SCHEMA_VERSION,
    }


def plan_input(name: str, decl: Any, typ: str, path: Path | None) -> PreparedInput:
    """Resolve and check one declared dataset (HubError / FormatError say what is wrong).

    `path` is the checked local path, or None for `hf_id:` alone. A dataset missing from the
    cache is not raised here but recorded in `missing` (the plan still forms; `psft-run` stops)."""
    common = dict(name=name, type=typ, fmt=decl.format, columns=dict(decl.columns))
    if path is not None and path.is_file():
        if decl.config is not None:
            raise hub.HubError(f"{path} is one file: `config:` needs a hub-layout directory")
        key = _key({"file": _file_hash(path), **_selection(decl, typ)})
        prepared = PreparedInput(**common, key=key, source=None, file=path)
    else:
        if path is None:
            try:
                path = hub.find_snapshot(decl.hf_id, decl.revision)
            except hub.NotInCache as e:
                ref = f"hf:{decl.hf_id}@{decl.revision}:{decl.config}:{decl.split}"
                key = _key({"missing": ref, **_selection(decl, typ)})
                return PreparedInput(**common, key=key, source=None, missing=str(e))
        src = hub.open_source(path, decl.config, decl.split)
        prepared = PreparedInput(
            **common, key=hub.source_key(src, _selection(decl, typ)), source=src
        )
    first = next(iter_raw(prepared), None)
    if first is None:
        raise FormatError("the selected data has no rows")
    schemas.check_convertible(first, typ, decl.format, decl.columns or None)
    return prepared


def iter_raw(prepared: PreparedInput) -> Iterator[Row]:
    """The source rows, streamed, before conversion."""
    if prepared.file is not None:
        return formats.iter_rows(prepared.file)
    if prepared.source is None:
        raise FileNotFoundError(prepared.missing or f"{prepared.name}: no source")
    return hub.iter_source(prepared.source)


def iter_converted(prepared: PreparedInput) -> Iterator[Row]:
    columns = prepared.columns or None
    for i, row in enumerate(iter_raw(prepared)):
        try:
            yield schemas.convert_row(row, prepared.type, prepared.fmt, columns)
        except FormatError as e:
            raise FormatError(f"dataset {prepared.name!r}, row {i}: {e}") from None


def write_prepared(prepared: PreparedInput, out: Path) -> int:
    """Convert every row into `out` (JSONL), atomically; the number of rows written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    n = 0
    try:
        with tmp.open("w") as f:
            for row in iter_converted(prepared):
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                n += 1
        if n == 0:
            raise FormatError(f"dataset {prepared.name!r}: no rows")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _file_hash(path: Path) -> str:
    from psft_orchestrator.hashing import content_hash

    return content_hash(path)


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
