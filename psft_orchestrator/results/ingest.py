"""Files in the artifact tree -> rows in the DuckDB index.

- `ingest_node(con, node_dir)` / `ingest_nodes(con, node_dirs)`: a node directory's
  manifest.json, metrics.jsonl and outputs/scores.json. Keyed by fingerprint: re-ingesting
  a node replaces its rows in every table, in one transaction.
- `ingest_run_record(con, path)`: a `<workspace>/runs/<run_id>.json` record.
- `import_external(con, csv_path, source)`: published numbers (e.g. the paper's tables).
- `reindex(workspace)`: rebuild the whole index from the workspace alone (artifacts/, runs/,
  external/) into a temporary file, then rename it over the old one.

Metrics are read by DuckDB itself (`read_ndjson_objects` over all files of a batch at once),
so a thousand nodes of a thousand steps each take seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import (
    NODE_TABLES,
    IndexBusyError,
    ResultsError,
    UsageError,
    connect,
    create_schema,
    db_path,
)

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from psft_orchestrator.contract import Manifest

EXTERNAL_DIR = "external"
SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXTERNAL_CSV_COLUMNS = ("table", "model", "method", "benchmark", "score")

# Metrics are staged in a temp table first (outside the transaction, because a parse error
# aborts a DuckDB transaction and we want a per-file fallback), then copied in one go: one
# numeric row per (step, key) to `metrics`; lists, strings, booleans to `metric_values`.
_KV_CREATE = """
CREATE OR REPLACE TEMP TABLE _kv (fingerprint VARCHAR, step BIGINT, key VARCHAR, num DOUBLE, other JSON)
"""
_KV_READ = """
INSERT INTO _kv
WITH raw AS (
    SELECT f.fingerprint, CAST(r.json AS MAP(VARCHAR, JSON)) AS m
    FROM read_ndjson_objects($files, filename = true) r JOIN _files f ON f.path = r.filename
), kv AS (
    SELECT fingerprint, TRY_CAST(m['step'] AS BIGINT) AS step, unnest(map_entries(m), recursive := true)
    FROM raw
), typed AS (
    SELECT *, json_type(value) IN ('BIGINT', 'UBIGINT', 'DOUBLE') AS numeric FROM kv WHERE key <> 'step'
)
SELECT fingerprint, step, key, CASE WHEN numeric THEN CAST(value AS DOUBLE) END,
       CASE WHEN NOT numeric THEN value END
FROM typed
"""
_KV_COPY = (
    "INSERT INTO metrics SELECT fingerprint, step, key, num FROM _kv WHERE other IS NULL",
    "INSERT INTO metric_values SELECT fingerprint, step, key, other FROM _kv WHERE other IS NOT NULL",
)


@dataclass
class NodeFiles:
    """What one node directory contributes, parsed in Python (everything but metrics)."""

    node: dict[str, Any]
    labels: list[tuple[str, str]]
    parents: list[tuple[str, str]]  # (fingerprint, node_id)
    scores: list[dict[str, Any]]
    metrics_path: Path | None


def ingest_node(con: duckdb.DuckDBPyConnection, node_dir: str | Path) -> str:
    """Index one node directory; returns its fingerprint. Idempotent."""
    return ingest_nodes(con, [Path(node_dir)])[0]


def ingest_nodes(con: duckdb.DuckDBPyConnection, node_dirs: list[Path]) -> list[str]:
    """Index many node directories in one transaction; returns their fingerprints."""
    parsed = [_read_node(Path(d)) for d in node_dirs]
    # The same fingerprint twice in one batch: the last directory wins, as with two calls.
    by_fp = {p.node["fingerprint"]: p for p in parsed}
    parsed = list(by_fp.values())
    fps = list(by_fp)
    if not fps:
        return []
    import pyarrow as pa

    tables = _arrow_tables(parsed)
    _stage_metrics(con, [(p.node["fingerprint"], p.metrics_path) for p in parsed if p.metrics_path])
    try:
        with _transaction(con):
            con.register("_fps", pa.table({"fingerprint": pa.array(fps, pa.string())}))
            # Replace, never duplicate. Only nodes already indexed need deleting, and skipping
            # the delete for new ones matters: deleting from `metrics` scans the whole table.
            if con.execute(
                "SELECT count(*) FROM nodes WHERE fingerprint IN (SELECT fingerprint FROM _fps)"
            ).fetchall()[0][0]:
                for table, key in NODE_TABLES.items():
                    con.execute(
                        f"DELETE FROM {table} WHERE {key} IN (SELECT fingerprint FROM _fps)"
                    )
            for table, arrow in tables.items():
                _insert(con, table, arrow)
            for sql in _KV_COPY:
                con.execute(sql)
            con.unregister("_fps")
    finally:
        con.execute("DROP TABLE IF EXISTS _kv")
    return [p.node["fingerprint"] for p in parsed]


def _read_node(node_dir: Path) -> NodeFiles:
    m = read_manifest(node_dir / "manifest.json")
    fp = m.fingerprint
    labels = m.labels
    node = {
        "fingerprint": fp,
        "run_id": m.run_id,
        "spec_name": m.spec_name,
        "stage": m.stage,
        "node_id": m.node_id,
        "kind": m.kind,
        "method": _text(labels.get("method")),
        "model": _text(labels.get("model")),
        "backend": m.backend,
        "seed": _int(labels.get("seed")),
        "status": m.status,
        "started_at": m.started_at.astimezone(UTC),
        "ended_at": m.ended_at.astimezone(UTC),
        "duration_s": m.duration_s,
        "output_type": m.output_type,
        "host": m.host,
        "attempt": m.attempt,
        "config": _dumps(m.config),
        "labels": _dumps(labels),
        "versions": _dumps(m.versions),
        "artifact_path": str(node_dir.resolve()),
    }
    parents = [(p.fingerprint, p.node_id) for p in m.parents]
    scores_path = node_dir / "outputs" / "scores.json"
    scores = _read_scores(scores_path, fp) if scores_path.exists() else []
    metrics_path = node_dir / "metrics.jsonl"
    return NodeFiles(
        node=node,
        labels=sorted((str(k), _text(v) or "") for k, v in labels.items()),
        parents=sorted(set(parents)),
        scores=scores,
        metrics_path=metrics_path.resolve() if metrics_path.exists() else None,
    )


def read_manifest(path: Path) -> Manifest:
    """The node's manifest, validated: a missing or mistyped field is an error naming it."""
    from pydantic import ValidationError

    from psft_orchestrator.contract import Manifest

    raw = _read_json(path, what="node manifest")
    if not isinstance(raw, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(_field_problem(err) for err in e.errors())
        raise ResultsError(
            f"{path}: not a valid manifest (contract.Manifest): {problems}"
        ) from None


def _field_problem(err: Any) -> str:
    where = ".".join(str(x) for x in err["loc"])
    if err["type"] == "missing":
        return f"missing required field {where!r}"
    if err["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    return f"{where}: {err['msg']}"


def _read_scores(path: Path, fp: str) -> list[dict[str, Any]]:
    from psft_orchestrator.contract import ScoreRow

    data = _read_json(path, what="eval scores")
    if not isinstance(data, list):
        raise ResultsError(f"{path}: expected a JSON list of score rows (contract.ScoreRow)")
    rows = []
    for i, item in enumerate(data):
        try:
            row = ScoreRow.model_validate(item)
        except Exception as e:
            raise ResultsError(f"{path}: row {i} is not a valid ScoreRow: {e}") from None
        protocol = json.dumps(row.protocol, sort_keys=True) if row.protocol else None
        rows.append({"fingerprint": fp, **row.model_dump(), "protocol": protocol})
    return rows


# Arrow column types of the rows ingested from Python (the tables' DDL is in `store.py`):
# "ts" is a UTC timestamp, the rest are pyarrow type names.
NODE_COLUMNS = {
    **dict.fromkeys(("fingerprint", "run_id", "spec_name", "stage", "node_id"), "string"),
    **dict.fromkeys(("kind", "method", "model", "backend"), "string"),
    "seed": "int64",
    "status": "string",
    "started_at": "ts",
    "ended_at": "ts",
    "duration_s": "float64",
    **dict.fromkeys(("output_type", "host"), "string"),
    "attempt": "int32",
    **dict.fromkeys(("config", "labels", "versions", "artifact_path"), "string"),
}
SCORE_COLUMNS = {
    **dict.fromkeys(("fingerprint", "suite", "benchmark", "metric"), "string"),
    "value": "float64",
    "n": "int32",
    "stderr": "float64",
    "step": "int64",
    "protocol": "string",
}
LABEL_COLUMNS = dict.fromkeys(("fingerprint", "key", "value"), "string")
LINEAGE_COLUMNS = dict.fromkeys(("child", "parent", "parent_node_id"), "string")
RUN_COLUMNS = {
    **dict.fromkeys(("run_id", "spec_name", "spec_path"), "string"),
    "started_at": "ts",
    "ended_at": "ts",
    "status": "string",
    "n_nodes": "int32",
    "record_path": "string",
}
RUN_NODE_COLUMNS = {
    **dict.fromkeys(("run_id", "node_id", "stage", "fingerprint", "status"), "string"),
    "cached": "bool_",
    "duration_s": "float64",
    **dict.fromkeys(("error", "log"), "string"),
}
EXTERNAL_RESULT_COLUMNS = {
    **dict.fromkeys(("source", "table_id", "model", "method", "benchmark"), "string"),
    **dict.fromkeys(("score", "reported_avg"), "float64"),
}


def _arrow(rows: list[dict[str, Any]], columns: dict[str, str]) -> pa.Table:
    import pyarrow as pa

    def arrow_type(name: str) -> pa.DataType:
        return pa.timestamp("us", tz="UTC") if name == "ts" else getattr(pa, name)()

    schema = pa.schema([(col, arrow_type(t)) for col, t in columns.items()])
    return pa.Table.from_pylist(rows, schema=schema)


def _insert(con: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table) -> None:
    con.register("_in", arrow)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _in")
    con.unregister("_in")


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.begin()
    try:
        yield
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _arrow_tables(parsed: list[NodeFiles]) -> dict[str, pa.Table]:
    labels = [
        {"fingerprint": p.node["fingerprint"], "key": k, "value": v}
        for p in parsed
        for k, v in p.labels
    ]
    lineage = [
        {"child": p.node["fingerprint"], "parent": fp, "parent_node_id": nid}
        for p in parsed
        for fp, nid in p.parents
    ]
    return {
        "nodes": _arrow([p.node for p in parsed], NODE_COLUMNS),
        "labels": _arrow(labels, LABEL_COLUMNS),
        "lineage": _arrow(lineage, LINEAGE_COLUMNS),
        "scores": _arrow([s for p in parsed for s in p.scores], SCORE_COLUMNS),
    }


def _stage_metrics(con: duckdb.DuckDBPyConnection, files: list[tuple[str, Path]]) -> None:
    """metrics.jsonl files -> temp table _kv, all in one DuckDB scan when possible."""
    import duckdb
    import pyarrow as pa

    con.execute(_KV_CREATE)

    def load(batch: list[tuple[str, Path]]) -> None:
        con.register(
            "_files",
            pa.table({"fingerprint": [fp for fp, _ in batch], "path": [str(p) for _, p in batch]}),
        )
        try:
            con.execute(_KV_READ, {"files": [str(p) for _, p in batch]})
        finally:
            con.unregister("_files")

    if not files:
        return
    try:
        load(files)
    except duckdb.Error:
        # Some file has a line DuckDB cannot parse (a truncated last line after a crash, say).
        # Load file by file so the good ones go fast and the bad one is read line by line.
        for fp, path in files:
            try:
                load([(fp, path)])
            except duckdb.Error:
                _stage_metrics_python(con, fp, path)


def _stage_metrics_python(con: duckdb.DuckDBPyConnection, fp: str, path: Path) -> None:
    """Slow path for one file: skip unparseable lines (reported once), keep the rest."""
    import pyarrow as pa

    numeric: dict[str, list[Any]] = {"step": [], "key": [], "value": []}
    other: dict[str, list[Any]] = {"step": [], "key": [], "value": []}
    bad = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError:
                bad.append(lineno)
                continue
            step = _int(row.get("step"))
            for key, value in row.items():
                if key == "step":
                    continue
                is_num = isinstance(value, int | float) and not isinstance(value, bool)
                out = numeric if is_num else other
                out["step"].append(step)
                out["key"].append(str(key))
                out["value"].append(float(value) if is_num else json.dumps(value))
    if bad:
        import sys

        print(
            f"warning: {path}: skipped unparseable line(s) {bad[:5]}{'...' if len(bad) > 5 else ''}",
            file=sys.stderr,
        )
    for cols, is_num in ((numeric, True), (other, False)):
        n = len(cols["step"])
        if not n:
            continue
        arrow = pa.table(
            {
                "fingerprint": pa.array([fp] * n, pa.string()),
                "step": pa.array(cols["step"], pa.int64()),
                "key": pa.array(cols["key"], pa.string()),
                "num": pa.array(cols["value"] if is_num else [None] * n, pa.float64()),
                "other": pa.array([None] * n if is_num else cols["value"], pa.string()),
            }
        )
        con.register("_in", arrow)
        con.execute("INSERT INTO _kv BY NAME SELECT * FROM _in")
        con.unregister("_in")


# --- run records ---------------------------------------------------------------------------


def ingest_run_record(con: duckdb.DuckDBPyConnection, path: str | Path) -> str:
    """Index `<workspace>/runs/<run_id>.json`; returns the run id. Idempotent."""
    path = Path(path)
    rec = _read_json(path, what="run record")
    if not isinstance(rec, dict) or not rec.get("run_id"):
        raise ResultsError(f"{path}: not a run record (expected an object with run_id)")
    run_id = str(rec["run_id"])
    nodes = [n for n in rec.get("nodes") or [] if isinstance(n, dict)]
    run = {
        "run_id": run_id,
        "spec_name": rec.get("spec_name"),
        "spec_path": rec.get("spec_path"),
        "started_at": _time(rec.get("started_at")),
        "ended_at": _time(rec.get("ended_at")),
        "status": rec.get("status"),
        "n_nodes": len(nodes),
        "record_path": str(path.resolve()),
    }
    run_nodes = [_run_node_row(run_id, n) for n in nodes]
    with _transaction(con):
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM run_nodes WHERE run_id = ?", [run_id])
        _insert(con, "runs", _arrow([run], RUN_COLUMNS))
        _insert(con, "run_nodes", _arrow(run_nodes, RUN_NODE_COLUMNS))
    return run_id


def _run_node_row(run_id: str, n: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "node_id": _text(n.get("node_id")),
        "stage": _text(n.get("stage")),
        "fingerprint": _text(n.get("fingerprint")),
        "status": _text(n.get("status")),
        "cached": bool(n.get("cached")) if n.get("cached") is not None else None,
        "duration_s": _float(n.get("duration_s")),
        "error": _text(n.get("error")),
        "log": _text(n.get("log")),
    }


# --- external (published) results ------------------------------------------------------------


def read_external_csv(path: str | Path) -> list[dict[str, Any]]:
    """Parse a results CSV (columns table, model, method, benchmark, score[, reported_avg])."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in EXTERNAL_CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(
            f"{path}:1: missing column(s) {', '.join(missing)}; expected a header "
            f"table,model,method,benchmark,score[,reported_avg]"
        )
    rows, seen = [], {}
    for lineno, rec in enumerate(reader, 2):
        try:
            score = float(rec["score"])
            avg_text = (rec.get("reported_avg") or "").strip()
            reported_avg = float(avg_text) if avg_text else None
        except ValueError:
            raise UsageError(
                f"{path}:{lineno}: score/reported_avg must be numbers, got {rec}"
            ) from None
        row = {
            "table_id": rec["table"].strip(),
            "model": rec["model"].strip(),
            "method": rec["method"].strip(),
            "benchmark": rec["benchmark"].strip(),
            "score": score,
            "reported_avg": reported_avg,
        }
        key = (row["table_id"], row["model"], row["method"], row["benchmark"])
        if key in seen:
            raise UsageError(
                f"{path}:{lineno}: duplicate of line {seen[key]} (same table, model, method, benchmark)"
            )
        seen[key] = lineno
        rows.append(row)
    return rows


def import_external(con: duckdb.DuckDBPyConnection, csv_path: str | Path, source: str) -> int:
    """Replace the rows of `source` with the CSV's rows; returns how many were loaded."""
    if not SOURCE_RE.match(source):
        raise UsageError(f"--source {source!r}: use letters, digits, '_', '-', '.' (e.g. paper)")
    rows = read_external_csv(csv_path)
    arrow = _arrow([{"source": source, **r} for r in rows], EXTERNAL_RESULT_COLUMNS)
    with _transaction(con):
        con.execute("DELETE FROM external_results WHERE source = ?", [source])
        _insert(con, "external_results", arrow)
    return len(rows)


def save_external(workspace: str | Path, csv_path: str | Path, source: str) -> Path:
    """Keep a copy of an imported CSV in the workspace, so `reindex` can load it again."""
    read_external_csv(csv_path)  # validate before copying
    dest = Path(workspace) / EXTERNAL_DIR / f"{source}.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".csv.tmp")
    tmp.write_bytes(Path(csv_path).read_bytes())
    os.replace(tmp, dest)
    return dest


# --- the whole workspace ------------------------------------------------------------------


def find_node_dirs(workspace: str | Path) -> list[Path]:
    """Finished node directories: artifacts/<stage>/<fp16>/ with manifest.json and _SUCCESS."""
    root = Path(workspace) / "artifacts"
    if not root.is_dir():
        return []
    return sorted(
        d
        for d in root.glob("*/*")
        if not d.parent.name.startswith(".")
        and (d / "_SUCCESS").exists()
        and (d / "manifest.json").exists()
    )


@dataclass
class ReindexStats:
    nodes: int
    runs: int
    external: int
    path: Path


def reindex(workspace: str | Path) -> ReindexStats:
    """Rebuild `<workspace>/index.duckdb` from the workspace files alone, atomically."""
    import duckdb

    ws = Path(workspace)
    final = db_path(ws)
    ws.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Wait for (or refuse) a live writer, and fold any WAL of the old file into it, so
        # that no stale `index.duckdb.wal` can be replayed on top of the new file.
        try:
            connect(final, read_only=False).close()
        except IndexBusyError:
            raise
        except ResultsError:
            pass  # a damaged index: replacing it is what reindex is for
    tmp = ws / f".{final.name}.tmp-{os.getpid()}"
    for p in (tmp, Path(f"{tmp}.wal")):
        p.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        create_schema(con)
        node_dirs = find_node_dirs(ws)
        ingest_nodes(con, node_dirs)
        records = sorted((ws / "runs").glob("*.json"))
        for rec in records:
            ingest_run_record(con, rec)
        n_ext = 0
        for csv_path in sorted((ws / EXTERNAL_DIR).glob("*.csv")):
            n_ext += import_external(con, csv_path, csv_path.stem)
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    Path(f"{final}.wal").unlink(missing_ok=True)
    os.replace(tmp, final)
    return ReindexStats(nodes=len(node_dirs), runs=len(records), external=n_ext, path=final)


# --- small helpers ------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read {what}: {e}") from None


def _dumps(value: Any) -> str:
    return json.dumps(_finite(value), sort_keys=True, default=str)


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON; store them as strings inside JSON columns."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t
