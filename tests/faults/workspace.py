"""What a workspace holds, read back for comparison: finished nodes, their models, scores and
metrics, and the DuckDB index (live, and as `reindex` rebuilds it)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

# Metric keys that measure time, not training: they differ between any two runs.
TIMING_KEY = re.compile(r"per_s$|_time|seconds|_s$")


def finished(ws: Path) -> list[Path]:
    """`_SUCCESS` of every finished node (not of a build directory in .tmp/ or .failed/)."""
    found = ws.glob("artifacts/*/*/_SUCCESS")
    return [p for p in found if not p.parent.parent.name.startswith(".")]


def success_mtimes(ws: Path) -> dict[str, int]:
    """`_SUCCESS` file of every finished node -> its mtime in ns."""
    return {str(p.relative_to(ws)): p.stat().st_mtime_ns for p in finished(ws)}


def node_dirs(ws: Path) -> dict[str, Path]:
    """stage/fp16 -> directory, for every finished node."""
    return {f"{p.parent.parent.name}/{p.parent.name}": p.parent for p in finished(ws)}


def model_digest(node: Path) -> str:
    """One hash over the weight files of the node's model (empty if it has no model)."""
    h = hashlib.sha256()
    for f in sorted((node / "outputs" / "model").glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def metric_rows(node: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the timing keys."""
    path = node / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [{k: v for k, v in r.items() if not TIMING_KEY.search(k)} for r in rows]


def scores(node: Path) -> Any:
    path = node / "outputs" / "scores.json"
    return json.loads(path.read_text()) if path.exists() else None


def end_state(ws: Path) -> dict[str, dict[str, Any]]:
    """Per finished node: model digest, scores, metric rows (timing keys dropped)."""
    return {
        name: {"model": model_digest(d), "scores": scores(d), "metrics": metric_rows(d)}
        for name, d in node_dirs(ws).items()
    }


INDEX_TABLES = (
    "runs",
    "run_nodes",
    "nodes",
    "labels",
    "lineage",
    "metrics",
    "metric_values",
    "scores",
)


def index_dump(db: Path) -> dict[str, str]:
    """Every table of an index file, sorted, as text (NaN == NaN in text)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            t: str(con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()) for t in INDEX_TABLES
        }
    finally:
        con.close()


def index_matches_reindex(ws: Path) -> list[str]:
    """Tables whose rows differ between the live index and what `reindex` builds from the files."""
    from psft_orchestrator.results.ingest import reindex

    live = index_dump(ws / "index.duckdb")
    reindex(ws)
    rebuilt = index_dump(ws / "index.duckdb")
    return [t for t in INDEX_TABLES if live[t] != rebuilt[t]]
