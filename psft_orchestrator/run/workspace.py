"""Is `--workspace` usable? Checked before a run writes anything (and at `--plan`).

A workspace that is a file, lies under a file, is not writable, or holds an `index.duckdb`
that is not a readable DuckDB index is refused with a `SpecError` (exit status 2) that says
what to do, instead of failing half-way through a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from psft_orchestrator.spec.errors import SpecError

DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
INDEX = "index.duckdb"


def check_workspace(ws: Path, open_index: bool = True) -> None:
    """Raise SpecError if a run could not use `ws`. `open_index=False` (for `--plan`) looks at
    the index file's header only, so that DuckDB is not imported."""
    ws = Path(ws)
    problem = directory_problem(ws)
    if problem:
        _refuse(ws, problem)
    index = ws / INDEX
    if index.exists():
        problem = _index_problem(index, open_index)
        if problem:
            _refuse(
                ws,
                f"has a results index that cannot be read ({problem}). Rebuild it from the "
                f"artifacts with `psft-results --workspace {ws} reindex`, then run again",
            )


def directory_problem(path: Path) -> str | None:
    """Why `path` cannot be used as a directory this process writes to (created if missing)."""
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == path else f"lies under {existing}, which is a file"
        return f"{what}, not a directory; give a directory (it is created if missing)"
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (nor can it be created in {existing})"
        return f"is not writable{where}; give a directory you can write to"
    return None


def _refuse(ws: Path, message: str) -> None:
    raise SpecError.one(None, "--workspace", f"{ws} {message}")


def _index_problem(index: Path, open_index: bool) -> str | None:
    """Why `index` is not a usable DuckDB index, or None."""
    if not index.is_file():
        return "not a file"
    try:
        with index.open("rb") as f:
            head = f.read(12)
    except OSError as e:
        return e.strerror or str(e)
    if len(head) < 12 or head[8:12] != DUCKDB_MAGIC:
        return "not a DuckDB database file"
    if not open_index:
        return None
    from psft_orchestrator.results.store import IndexBusyError, ResultsError, reader

    try:
        with reader(index.parent, wait_s=0):
            return None
    except IndexBusyError:  # a run is writing it: the run waits for the workspace lock anyway
        return None
    except ResultsError as e:
        return str(e).split(". ")[0]
