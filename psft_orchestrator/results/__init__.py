"""Results: the DuckDB index of every node's manifest, metrics and eval scores, the paper's
tables (definitions in results/tables/*.yaml) and figures. See docs/results.md.

The run layer calls `ingest_node` after each node (inside `store.writer(workspace)`),
`ingest_run_record` when a run ends, and `publish_tables(workspace, spec_name)` for the
Prefect table artifacts. Heavy imports (duckdb, pyarrow, matplotlib) happen on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ingest_node", "ingest_run_record", "publish_tables", "reindex"]


def __getattr__(name: str) -> Any:
    if name in ("ingest_node", "ingest_run_record", "reindex"):
        from . import ingest

        return getattr(ingest, name)
    if name == "publish_tables":
        from .tables import publish_tables

        return publish_tables
    raise AttributeError(name)
