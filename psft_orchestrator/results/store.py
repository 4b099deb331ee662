"""The DuckDB index: where it lives, its schema, and how to open it.

One file per workspace, `<workspace>/index.duckdb`. DuckDB allows one process to hold a
database file for writing, and a writer excludes readers in other processes. So:

- writers (the orchestrator after each node, `psft-results import` / `reindex`) open the file
  briefly with `writer()`, do one transaction, and close it;
- readers (every other CLI command) open it with `reader()`, read-only;
- both wait a few seconds for a lock held by someone else, then raise `IndexBusyError`
  with a message that says what to do. The CLI prints it and exits 1.

The schema is documented, table by table, in docs/results.md.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

DB_NAME = "index.duckdb"
SCHEMA_VERSION = "2"  # 2: scores.protocol
DEFAULT_WAIT_S = 10.0  # override with $PSFT_INDEX_WAIT_S

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);

CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    spec_name   VARCHAR,
    spec_path   VARCHAR,
    started_at  TIMESTAMPTZ,
    ended_at    TIMESTAMPTZ,
    status      VARCHAR,
    n_nodes     INTEGER,
    record_path VARCHAR
);

CREATE TABLE IF NOT EXISTS run_nodes (
    run_id      VARCHAR,
    node_id     VARCHAR,
    stage       VARCHAR,
    fingerprint VARCHAR,
    status      VARCHAR,          -- contract.NODE_STATUSES
    cached      BOOLEAN,
    duration_s  DOUBLE,
    error       VARCHAR,
    log         VARCHAR,
    PRIMARY KEY (run_id, node_id)
);

CREATE TABLE IF NOT EXISTS nodes (
    fingerprint   VARCHAR PRIMARY KEY,
    run_id        VARCHAR,        -- the run that built it
    spec_name     VARCHAR,
    stage         VARCHAR,
    node_id       VARCHAR,
    kind          VARCHAR,
    method        VARCHAR,        -- labels.method, labels.model, labels.seed, lifted out
    model         VARCHAR,
    backend       VARCHAR,
    seed          BIGINT,
    status        VARCHAR,
    started_at    TIMESTAMPTZ,
    ended_at      TIMESTAMPTZ,
    duration_s    DOUBLE,
    output_type   VARCHAR,
    host          VARCHAR,
    attempt       INTEGER,
    config        JSON,
    labels        JSON,
    versions      JSON,
    artifact_path VARCHAR
);

CREATE TABLE IF NOT EXISTS labels (
    fingerprint VARCHAR,
    key         VARCHAR,
    value       VARCHAR,          -- every label as text, for filters and pivots
    PRIMARY KEY (fingerprint, key)
);

CREATE TABLE IF NOT EXISTS lineage (
    child          VARCHAR,       -- fingerprint
    parent         VARCHAR,       -- fingerprint
    parent_node_id VARCHAR,
    PRIMARY KEY (child, parent)
);

CREATE TABLE IF NOT EXISTS metrics (
    fingerprint VARCHAR,
    step        BIGINT,
    key         VARCHAR,
    value       DOUBLE            -- numbers only (NaN and inf kept); see metric_values
);

CREATE TABLE IF NOT EXISTS metric_values (
    fingerprint VARCHAR,
    step        BIGINT,
    key         VARCHAR,
    value       JSON              -- non-numeric metric values: lists, strings, booleans
);

CREATE TABLE IF NOT EXISTS scores (
    fingerprint VARCHAR,
    suite       VARCHAR,
    benchmark   VARCHAR,
    metric      VARCHAR,
    value       DOUBLE,
    n           INTEGER,
    stderr      DOUBLE,
    step        BIGINT,           -- NULL = final eval
    protocol    VARCHAR           -- JSON: backend, sampling, k, judge, versions (evals/protocol.py)
);

CREATE TABLE IF NOT EXISTS external_results (
    source       VARCHAR,
    table_id     VARCHAR,         -- the CSV's "table" column ("1", "2", "5", ...)
    model        VARCHAR,
    method       VARCHAR,
    benchmark    VARCHAR,
    score        DOUBLE,
    reported_avg DOUBLE,
    PRIMARY KEY (source, table_id, model, method, benchmark)
);
"""

# Tables holding per-node rows, keyed by fingerprint (ingest replaces a node's rows in each).
NODE_TABLES: dict[str, str] = {
    "nodes": "fingerprint",
    "labels": "fingerprint",
    "lineage": "child",
    "metrics": "fingerprint",
    "metric_values": "fingerprint",
    "scores": "fingerprint",
}
ALL_TABLES = ("runs", "run_nodes", *NODE_TABLES, "external_results")


class ResultsError(Exception):
    """A failure the CLI reports as one message and exit status 1."""


class UsageError(ResultsError):
    """Bad input from the user (unknown table, bad --where, ...): exit status 2."""


class IndexBusyError(ResultsError):
    """The index file is locked by another process."""


class IndexMissingError(ResultsError):
    """There is no index file yet."""


def db_path(workspace: str | Path) -> Path:
    return Path(workspace) / DB_NAME


def default_workspace() -> Path:
    return Path(os.environ.get("PSFT_WORKSPACE") or "results")


def _wait_default() -> float:
    return float(os.environ.get("PSFT_INDEX_WAIT_S") or DEFAULT_WAIT_S)


def connect(
    path: str | Path, *, read_only: bool, wait_s: float | None = None, sandbox: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting up to `wait_s` for another process's lock; raise IndexBusyError after.

    `sandbox=True` also turns off DuckDB's file-system access (no read_csv('/etc/...'), no
    ATTACH, no COPY TO): used for the user's own SQL in `psft-results query`.
    """
    import duckdb

    path = Path(path)
    if read_only and not path.exists():
        raise IndexMissingError(
            f"no results index at {path}. Build it from the artifacts with "
            f"`psft-results --workspace {path.parent} reindex`, or run a spec first."
        )
    config = {"enable_external_access": False} if sandbox else {}
    deadline = time.monotonic() + (_wait_default() if wait_s is None else wait_s)
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise ResultsError(f"cannot open the results index {path}: {e}") from None
            if time.monotonic() >= deadline:
                holder = re.search(r"PID (\d+)", str(e))
                who = f"process {holder.group(1)}" if holder else "another process"
                raise IndexBusyError(
                    f"the results index {path} is locked by {who} (probably a run ingesting a "
                    f"node, or another psft-results writing). Retry in a moment; if no run is "
                    f"active and it stays locked, stop that process."
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as e:
            raise ResultsError(
                f"cannot open the results index {path}: {e}. If the file is damaged, rebuild it "
                f"with `psft-results --workspace {path.parent} reindex`."
            ) from None


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])


def check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        row = rows[0] if rows else None
    except Exception:
        row = None
    if row is None or row[0] != SCHEMA_VERSION:
        found = row[0] if row else "none"
        raise ResultsError(
            f"the results index {path} has schema version {found}, this code expects "
            f"{SCHEMA_VERSION}. Rebuild it with `psft-results --workspace {path.parent} reindex`."
        )


@contextmanager
def writer(
    workspace: str | Path, wait_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection with the schema in place; closed (and checkpointed) on exit."""
    path = db_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect(path, read_only=False, wait_s=wait_s)
    try:
        create_schema(con)
        yield con
    finally:
        con.close()


@contextmanager
def reader(
    workspace: str | Path, wait_s: float | None = None, sandbox: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to an existing index."""
    path = db_path(workspace)
    con = connect(path, read_only=True, wait_s=wait_s, sandbox=sandbox)
    try:
        check_schema(con, path)
        yield con
    finally:
        con.close()
