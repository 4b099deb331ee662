"""Paper-style tables, defined as data (results/tables/*.yaml) and computed with SQL.

A definition says which eval nodes to include (`filter`), how to group them into rows
(`rows`, e.g. [model, method]; seeds are aggregated), which benchmarks make the columns
(in the paper's order and with its headers, or `columns: auto`), which score metric to read
per column, and whether to append an "Avg." column (the plain mean of the row's cells).
See docs/results.md for every field.

The same definition computes the table from our index (`source=None`) or from imported
published numbers (`source="paper"`), and `with_paper=` interleaves the two.

Every value that comes from a user (definition files, --where, benchmark names) reaches
SQL as a bound parameter; the only names placed in SQL text come from the fixed `NODE_FIELDS`
/ `SCORE_FIELDS` maps below.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .configs import Signatures, describe, differing
from .render import Grid, GridRow, render
from .stats import Estimate, mean_ci
from .store import ResultsError, UsageError

if TYPE_CHECKING:
    import duckdb

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
REPO_TABLES_DIR = Path(__file__).resolve().parents[2] / "results" / "tables"
AVG_TOLERANCE = 0.01

# Fields a table row / pivot / --where may name, and the SQL they stand for. Any other name is
# looked up as a label key (bound as a parameter).
NODE_FIELDS: dict[str, str] = {
    "method": "n.method",
    "model": "n.model",
    "seed": "n.seed",
    "stage": "n.stage",
    "kind": "n.kind",
    "backend": "n.backend",
    "spec": "n.spec_name",
    "spec_name": "n.spec_name",
    "node_id": "n.node_id",
    "run_id": "n.run_id",
    "fingerprint": "n.fingerprint",
}
SCORE_FIELDS: dict[str, str] = {
    "suite": "s.suite",
    "benchmark": "s.benchmark",
    "metric": "s.metric",
    "step": "s.step",
}
METRIC_FIELDS: dict[str, str] = {"key": "m.key"}
AGGREGATES: dict[str, str] = {"mean": "avg", "median": "median", "min": "min", "max": "max"}


class TableDefError(UsageError):
    """A table definition file is invalid (the message names file:line)."""


# --- definitions ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class Column(_Strict):
    """One benchmark column."""

    header: str = Field(description="Column header as printed (the paper's spelling).")
    benchmark: list[str] = Field(
        description="Benchmark name(s) in scores.json; matched case-insensitively."
    )
    metric: list[str] | None = Field(
        None, description="Metric glob(s); default: the table's `metric`."
    )
    external: str | None = Field(
        None, description="Benchmark name in imported results; default: header."
    )

    _list = field_validator("benchmark", "metric", mode="before")(_as_list)


class AutoColumns(_Strict):
    include: list[str] = Field(["*"], description="Benchmark globs to include; also their order.")
    exclude: list[str] = Field(default_factory=list)

    _list = field_validator("include", "exclude", mode="before")(_as_list)


class Filter(_Strict):
    """Which eval nodes and scores feed the table. Globs (`*`, `?`) allowed in text fields."""

    spec: str | None = None
    stage: str | None = None
    kind: str | None = "eval"
    suite: str | None = None
    labels: dict[str, str | int | float | bool] = Field(default_factory=dict)
    step: Literal["final"] | int = Field(
        "final",
        description="'final': each node's final eval (step null, else its last step); or a step number.",
    )


class TableDef(_Strict):
    name: str = ""
    title: str = ""
    description: str = ""
    paper_table: str | None = Field(
        None, description="The `table` value of these numbers in imported CSVs."
    )
    rows: list[str] = Field(["model", "method"], min_length=1)
    row_order: dict[str, list[str]] = Field(default_factory=dict)
    columns: list[Column] | None = Field(
        None, description="None (YAML `auto`): whatever benchmarks exist."
    )
    auto_columns: AutoColumns = Field(default_factory=AutoColumns)
    metric: list[str] = Field(["*"], description="Default metric glob(s) for every column.")
    aggregate: Literal["mean", "median", "min", "max"] = "mean"
    decimals: int = Field(2, ge=0, le=6)
    avg: bool = True
    avg_header: str = "Avg."
    filter: Filter = Field(default_factory=Filter)
    source_file: str = Field("", exclude=True)

    _list = field_validator("metric", mode="before")(_as_list)

    @model_validator(mode="before")
    @classmethod
    def _auto(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("columns") == "auto":
            data = {**data, "columns": None}
        return data

    @field_validator("rows")
    @classmethod
    def _names(cls, rows: list[str]) -> list[str]:
        for r in rows:
            if not NAME_RE.match(r):
                raise ValueError(f"row field {r!r} is not a valid name (letters, digits, _ . -)")
        return rows

    @field_validator("row_order", mode="before")
    @classmethod
    def _order_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: [str(x) for x in vals] if isinstance(vals, list) else vals
                for k, vals in v.items()
            }
        return v

    @property
    def auto(self) -> bool:
        return self.columns is None


def tables_dirs(workspace: str | Path | None = None) -> list[Path]:
    """Where definitions are looked up: $PSFT_TABLES_DIR (':'-separated) or the repo's
    results/tables, then `<workspace>/tables` (local additions; same name = first wins)."""
    env = os.environ.get("PSFT_TABLES_DIR")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else [REPO_TABLES_DIR]
    if workspace is not None:
        dirs.append(Path(workspace) / "tables")
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append(d)
    return out


def load_definition(path: str | Path) -> TableDef:
    """Parse and validate one YAML definition; errors name file:line and the key."""
    from psft_orchestrator.spec.errors import SpecError
    from psft_orchestrator.spec.yamlsrc import load_yaml

    path = Path(path)
    try:
        doc = load_yaml(path)
    except SpecError as e:
        raise TableDefError(str(e)) from None
    if not isinstance(doc.data, dict):
        raise TableDefError(f"error: {path}:1: a table definition must be a mapping")
    try:
        tdef = TableDef.model_validate(doc.data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            keys = _doc_path(doc.data, err["loc"])
            where = doc.loc(keys)
            key = ".".join(str(k) for k in keys) or "<top level>"
            lines.append(f"error: {where}: {key}: {err['msg']}")
        raise TableDefError("\n".join(lines)) from None
    tdef.name = tdef.name or path.stem
    tdef.source_file = str(path)
    if not NAME_RE.match(tdef.name):
        raise TableDefError(f"error: {path}: name {tdef.name!r} must be letters, digits, _ . -")
    return tdef


def _doc_path(data: Any, loc: Sequence[Any]) -> tuple[Any, ...]:
    """Pydantic's error location minus its type-name parts (e.g. 'list[Column]')."""
    out: list[Any] = []
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if in_dict or in_list:
            data = data[part]
            out.append(part)
    return tuple(out)


def load_definitions(dirs: Sequence[Path]) -> dict[str, TableDef]:
    defs: dict[str, TableDef] = {}
    for d in dirs:
        here: dict[str, str] = {}
        for path in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            tdef = load_definition(path)
            if tdef.name in here:
                raise TableDefError(
                    f"error: {path}: table name {tdef.name!r} is also defined in {here[tdef.name]}"
                )
            here[tdef.name] = str(path)
            defs.setdefault(tdef.name, tdef)
    return defs


def get_definition(name: str, dirs: Sequence[Path]) -> TableDef:
    defs = load_definitions(dirs)
    if name not in defs:
        from psft_orchestrator.spec.errors import did_you_mean

        where = ", ".join(str(d) for d in dirs) or "(no definition directories found)"
        raise UsageError(
            f"no table named {name!r}{did_you_mean(name, defs)}; definitions are read from {where}"
        )
    return defs[name]


# --- computing ------------------------------------------------------------------------------


class _Params:
    """Collects bound parameters and hands out their $names."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


def field_sql(name: str, params: _Params, extra: dict[str, str] | None = None) -> str:
    """SQL for a node field, an extra (score/metric) field, or a label looked up by key."""
    if name in NODE_FIELDS:
        return NODE_FIELDS[name]
    if extra and name in extra:
        return extra[name]
    if not NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a valid field or label name")
    return f"(SELECT l.value FROM labels l WHERE l.fingerprint = n.fingerprint AND l.key = {params(name)})"


def check_fields(
    con: duckdb.DuckDBPyConnection, names: Sequence[str], extra: dict[str, str]
) -> None:
    """Every name must be a known field or a label key present in the index."""
    from psft_orchestrator.spec.errors import did_you_mean

    labels = {r[0] for r in con.execute("SELECT DISTINCT key FROM labels").fetchall()}
    known = set(NODE_FIELDS) | set(extra) | labels
    for name in names:
        if name not in known:
            raise UsageError(f"unknown field or label {name!r}{did_you_mean(name, known)}")


def _filter_sql(f: Filter, params: _Params, spec: str | None, run: str | None = None) -> list[str]:
    where = []
    if run is not None:  # only the nodes that took part in this run (computed or cached)
        where.append(
            f"n.fingerprint IN (SELECT fingerprint FROM run_nodes WHERE run_id = {params(run)})"
        )
    for value, col in (
        (f.spec, "n.spec_name"),
        (f.stage, "n.stage"),
        (f.kind, "n.kind"),
        (f.suite, "s.suite"),
    ):
        if value is not None:
            where.append(f"{col} GLOB {params(value)}")
    if spec is not None:
        where.append(f"n.spec_name = {params(spec)}")
    for key, value in f.labels.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        where.append(
            "EXISTS (SELECT 1 FROM labels l WHERE l.fingerprint = n.fingerprint "
            f"AND l.key = {params(key)} AND l.value = {params(text)})"
        )
    if f.step != "final":
        where.append(f"s.step = {params(int(f.step))}")
    return where


def _auto_columns(
    con: duckdb.DuckDBPyConnection, tdef: TableDef, spec: str | None, run: str | None = None
) -> list[Column]:
    params = _Params()
    where = [
        *_filter_sql(tdef.filter, params, spec, run),
        _any_glob("s.metric", tdef.metric, params),
    ]
    found = con.execute(
        f"SELECT DISTINCT s.benchmark, s.metric FROM nodes n JOIN scores s USING (fingerprint) "
        f"WHERE {' AND '.join(where)}",
        params.values,
    ).fetchall()
    return _pick_auto(tdef.auto_columns, found)


def _pick_auto(auto: AutoColumns, found: list[tuple[str, str]]) -> list[Column]:
    per_bench: dict[str, set[str]] = {}
    for bench, metric in found:
        per_bench.setdefault(bench, set()).add(metric)

    def rank(bench: str) -> tuple[int, list[Any]]:
        hits = [i for i, g in enumerate(auto.include) if fnmatch.fnmatchcase(bench, g)]
        return (hits[0] if hits else len(auto.include), natural_key(bench))

    benches = [
        b
        for b in per_bench
        if any(fnmatch.fnmatchcase(b, g) for g in auto.include)
        and not any(fnmatch.fnmatchcase(b, g) for g in auto.exclude)
    ]
    cols = []
    for bench in sorted(benches, key=rank):
        metrics = sorted(per_bench[bench], key=natural_key)
        for metric in metrics:
            header = bench if len(metrics) == 1 else f"{bench} {metric}"
            cols.append(Column(header=header, benchmark=[bench], metric=[metric]))
    return cols


def _any_glob(col: str, globs: Sequence[str], params: _Params) -> str:
    return "(" + " OR ".join(f"{col} GLOB {params(g)}" for g in globs) + ")"


@dataclass
class NodeCells:
    """One eval node's cells: its row key, seed and a value per column (None: no score)."""

    key: tuple[str, ...]
    fingerprint: str
    seed: str
    values: list[float | None]
    node_id: str = ""
    protocols: dict[int, list[str | None]] = field(default_factory=dict)  # column -> JSON texts


@dataclass
class RowStats:
    """A table row from our index: an estimate per column over the row's seeds."""

    key: tuple[str, ...]
    cells: list[Estimate | None]
    avg: Estimate | None = None


def node_cells(
    con: duckdb.DuckDBPyConnection,
    tdef: TableDef,
    columns: list[Column],
    spec: str | None = None,
    run: str | None = None,
) -> list[NodeCells]:
    """Each eval node's final score per column (several benchmarks of one column: their mean)."""
    if not columns:
        return []
    params = _Params()
    benches, idx, metrics = [], [], []
    for i, col in enumerate(columns):
        for b in col.benchmark:
            for m in col.metric or tdef.metric:
                benches.append(b.lower())
                idx.append(i)
                metrics.append(m)
    dims = [f"{field_sql(d, params)} AS d{k}" for k, d in enumerate(tdef.rows)]
    dim_names = ", ".join(f"d{k}" for k in range(len(tdef.rows)))
    where = _filter_sql(tdef.filter, params, spec, run) or ["TRUE"]
    cols = (
        f"SELECT unnest({params(benches)}::VARCHAR[]) AS bench, unnest({params(idx)}::INTEGER[]) AS col, "
        f"unnest({params(metrics)}::VARCHAR[]) AS metric_glob"
    )
    sql = f"""
        WITH cols AS ({cols}),
        sel AS (
            SELECT {", ".join(dims)}, c.col, s.metric, s.value, n.fingerprint, n.seed, n.node_id,
                   s.protocol,
                   row_number() OVER (PARTITION BY n.fingerprint, c.col, s.benchmark, s.metric
                                      ORDER BY s.step IS NULL DESC, s.step DESC) AS rk
            FROM nodes n JOIN scores s ON s.fingerprint = n.fingerprint
            JOIN cols c ON lower(s.benchmark) = c.bench AND s.metric GLOB c.metric_glob
            WHERE {" AND ".join(where)}
        )
        SELECT {dim_names}, col, list(DISTINCT metric ORDER BY metric), avg(value), fingerprint,
               seed, node_id, list(DISTINCT protocol)
        FROM sel WHERE rk = 1 GROUP BY {dim_names}, col, fingerprint, seed, node_id
    """
    nd = len(tdef.rows)
    by_node: dict[str, NodeCells] = {}
    row_metrics: dict[tuple[tuple[str, ...], int], set[str]] = {}
    for rec in con.execute(sql, params.values).fetchall():
        key = tuple("–" if v is None else str(v) for v in rec[:nd])
        col, found, value, fp, seed, node_id = rec[nd : nd + 6]
        row_metrics.setdefault((key, col), set()).update(found)
        seed_text = "–" if seed is None else str(seed)
        cells = by_node.setdefault(
            fp, NodeCells(key, fp, seed_text, [None] * len(columns), node_id)
        )
        cells.values[col] = value
        cells.protocols[col] = rec[nd + 6]
    _check_one_metric(tdef, columns, row_metrics)
    return _by_appearance(con, tdef, list(by_node.values()), run)


def _check_one_metric(
    tdef: TableDef, columns: list[Column], row_metrics: dict[tuple[tuple[str, ...], int], set[str]]
) -> None:
    for (key, col), found in row_metrics.items():
        if len(found) > 1:
            raise UsageError(
                f"table {tdef.name}: column {columns[col].header!r} matches several metrics "
                f"({', '.join(sorted(found))}) for row {' / '.join(key)}; set `metric:` for that "
                f"column in {tdef.source_file or 'its definition'}"
            )


def _by_appearance(
    con: duckdb.DuckDBPyConnection, tdef: TableDef, nodes: list[NodeCells], run: str | None
) -> list[NodeCells]:
    """One entry per (node, row key) under which runs listed it.

    Two plan nodes can share a fingerprint (a toy profile maps both paper models to one toy
    model): the node is built once and its manifest carries the first one's labels, but the
    run record lists both node ids. Their coordinates (`eval[model=...,method=...]`) give each
    appearance its own row key, so the node shows under both models.
    """
    if not nodes:
        return nodes
    scope = "" if run is None else " AND run_id = $run"
    rows = con.execute(
        "SELECT DISTINCT fingerprint, node_id FROM run_nodes WHERE status IN ('success', 'cached') "
        f"AND fingerprint IN (SELECT unnest($fps::VARCHAR[])){scope}",
        {"fps": [n.fingerprint for n in nodes], **({} if run is None else {"run": run})},
    ).fetchall()
    seen: dict[str, list[str]] = {}
    for fp, node_id in rows:
        seen.setdefault(fp, []).append(node_id)
    out: list[NodeCells] = []
    for node in nodes:
        own = coords_of(node.node_id)
        # only row fields whose label is the node's own coordinate can differ by appearance
        # (not e.g. method "SFT->DPO" on a node whose coordinate is method=SFT)
        from_coords = [d in own and own[d] == v for d, v in zip(tdef.rows, node.key, strict=True)]
        keys = {node.key} if run is None or node.fingerprint not in seen else set()
        for node_id in seen.get(node.fingerprint, []):
            coords = coords_of(node_id)
            keys.add(
                tuple(
                    coords.get(d, v) if use else v
                    for d, v, use in zip(tdef.rows, node.key, from_coords, strict=True)
                )
            )
        out += [
            NodeCells(k, node.fingerprint, node.seed, node.values, node.node_id, node.protocols)
            for k in sorted(keys)
        ]
    return out


def coords_of(node_id: str) -> dict[str, str]:
    """'eval[model=Qwen,method=SFT]' -> {'model': 'Qwen', 'method': 'SFT'} (text values)."""
    inner = node_id.partition("[")[2].rstrip("]")
    pairs = (part.partition("=") for part in inner.split(",") if "=" in part)
    return {k: v for k, _, v in pairs}


def aggregate_rows(
    tdef: TableDef, nodes: list[NodeCells], signatures: Signatures | None, per_seed: bool = False
) -> tuple[list[RowStats], list[str]]:
    """Rows over seeds; returns the rows and the extra key headers they carry.

    A row groups only replicates (`configs.Signatures`): where one row key holds nodes of
    several configurations, it is split, and a `config` key column says what differs.
    `per_seed`: one row per node, with a `seed` key column, nothing averaged.
    """
    groups: dict[tuple[Any, ...], list[NodeCells]] = {}
    for node in nodes:
        sig = signatures.key(node.fingerprint) if signatures else ()
        groups.setdefault((node.key, sig), []).append(node)
    by_key: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for key, sig in groups:
        by_key.setdefault(key, []).append(sig)
    split = {key: sigs for key, sigs in by_key.items() if len(sigs) > 1}
    extra = (["config"] if split else []) + (["seed"] if per_seed else [])
    rows: list[RowStats] = []
    for (key, sig), members in groups.items():
        label: list[str] = []
        if split:
            label = [
                _config_label(dict(sig), [dict(s) for s in split[key]]) if key in split else ""
            ]
        parts = [[m] for m in members] if per_seed else [members]
        for part in sorted(parts, key=lambda p: natural_key(p[0].seed)):
            seed = [part[0].seed] if per_seed else []
            rows.append(_row_stats(tdef, (*key, *label, *seed), part))
    return rows, extra


def _config_label(sig: dict[str, str], siblings: list[dict[str, str]]) -> str:
    return describe(sig, differing(siblings))


def _row_stats(tdef: TableDef, key: tuple[str, ...], members: list[NodeCells]) -> RowStats:
    ncol = len(members[0].values)
    cells = [_estimate(tdef, [m.values[i] for m in members]) for i in range(ncol)]
    avg = None
    if tdef.avg:
        mean = row_mean([c.mean if c else None for c in cells])
        complete = [row_mean(m.values) for m in members]
        complete = [v for v in complete if v is not None]
        if mean is not None:
            ci = mean_ci(complete).ci if len(complete) == len(members) else None
            avg = Estimate(mean, ci, min(c.n for c in cells if c))
    return RowStats(key, cells, avg)


def _estimate(tdef: TableDef, values: list[float | None]) -> Estimate | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if tdef.aggregate == "mean" and all(v == v for v in present):
        return mean_ci(present)
    import statistics

    agg = {"mean": statistics.fmean, "median": statistics.median, "min": min, "max": max}
    return Estimate(float(agg[tdef.aggregate](present)), None, len(present))


def compute_external(
    con: duckdb.DuckDBPyConnection, tdef: TableDef, columns: list[Column] | None, source: str
) -> tuple[list[Column], dict[tuple[str, ...], list[float | None]], dict[tuple[str, ...], float]]:
    """Cells from imported results, plus each row's reported average (if any)."""
    if tdef.paper_table is None:
        raise UsageError(
            f"table {tdef.name} has no `paper_table:`, so it cannot be read from source {source!r}"
        )
    bad = [d for d in tdef.rows if d not in ("model", "method")]
    if bad:
        raise UsageError(
            f"table {tdef.name}: imported results only have model and method, not {', '.join(bad)}"
        )
    recs = con.execute(
        "SELECT model, method, benchmark, score, reported_avg FROM external_results "
        "WHERE source = ? AND table_id = ? ORDER BY rowid",
        [source, tdef.paper_table],
    ).fetchall()
    if columns is None:  # auto: the source's benchmarks in its own order
        names = list(dict.fromkeys(r[2] for r in recs))
        columns = [Column(header=b, benchmark=[b]) for b in names]
    by_name = {(c.external or c.header).lower(): i for i, c in enumerate(columns)}
    cells: dict[tuple[str, ...], list[float | None]] = {}
    reported: dict[tuple[str, ...], float] = {}
    for model, method, bench, score, rep in recs:
        key = tuple({"model": model, "method": method}[d] for d in tdef.rows)
        i = by_name.get(bench.lower())
        if i is None:
            continue
        cells.setdefault(key, [None] * len(columns))[i] = score
        if rep is not None:
            reported[key] = rep
    return columns, cells, reported


def compute_table(
    con: duckdb.DuckDBPyConnection,
    tdef: TableDef,
    *,
    source: str | None = None,
    with_paper: str | None = None,
    spec: str | None = None,
    run: str | None = None,
    per_seed: bool = False,
    show_protocol: bool = False,
) -> Grid:
    """The table as a Grid. `source`: read imported results of that source instead of our
    index; `with_paper`: put that source's rows beside ours; `spec`: only this spec's nodes.
    Our rows show the mean over seeds with its 95% CI and n (`per_seed`: one row per seed).
    A cell whose scores come from different evaluation protocols gets a footnote saying how they
    differ; `show_protocol` adds each column's protocols."""
    columns = tdef.columns
    nodes: list[NodeCells] = []
    ours: list[RowStats] = []
    extra: list[str] = []
    theirs: dict[tuple[str, ...], list[float | None]] = {}
    reported: dict[tuple[str, ...], float] = {}
    ext_name = source or with_paper
    if source is None:
        if columns is None:
            columns = _auto_columns(con, tdef, spec, run)
        nodes = node_cells(con, tdef, columns, spec, run)
        ours, extra = aggregate_rows(tdef, nodes, Signatures(con) if nodes else None, per_seed)
    if ext_name is not None:
        columns, theirs, reported = compute_external(con, tdef, columns, ext_name)
    assert columns is not None

    labelled = with_paper is not None
    nd = len(tdef.rows)
    entries: list[tuple[tuple[str, ...], int, str, RowStats]] = []
    for row in ours:
        entries.append((row.key, 0, "ours", row))
    for key, vals in theirs.items():
        cells = [None if v is None else Estimate(v, None, 0) for v in vals]
        entries.append(((*key, *[""] * len(extra)), 1, ext_name or "", RowStats(key, cells)))
    entries.sort(key=lambda e: (_row_rank(tdef, e[0][:nd]), e[0][nd:], e[1]))

    show_n = source is None
    grid = Grid(
        title=tdef.title or tdef.name,
        key_headers=[
            *tdef.rows,
            *extra,
            *(["source"] if labelled else []),
            *(["n"] if show_n else []),
        ],
        value_headers=[c.header for c in columns] + ([tdef.avg_header] if tdef.avg else []),
        rows=[],
        decimals=tdef.decimals,
    )
    for key, is_ext, who, stats in entries:
        grid.rows.append(_grid_row(grid, tdef, key, is_ext, who, stats, reported, labelled, show_n))
        if not is_ext:
            _mark_mixed_protocols(grid, grid.rows[-1], key[:nd], columns, nodes)
    if show_protocol:
        _protocol_footnotes(grid, columns, nodes)
    return grid


def _mark_mixed_protocols(grid: Grid, row: GridRow, key, columns, nodes) -> None:
    """Never average different protocols silently: footnote the cell with what differs."""
    from psft_orchestrator.evals.protocol import describe_mix

    nd = len(key)
    for col, c in enumerate(columns):
        texts = [p for n in nodes if n.key[:nd] == key for p in n.protocols.get(col, [])]
        mix = describe_mix(texts)
        if mix:
            grid.footnotes.append(
                f"{c.header} for {' / '.join(key)} averages scores of different protocols: {mix}"
            )
            row.marks[col] = len(grid.footnotes)


def _protocol_footnotes(grid: Grid, columns, nodes) -> None:
    from psft_orchestrator.evals.protocol import summarize

    for col, c in enumerate(columns):
        texts = {p for n in nodes for p in n.protocols.get(col, [])}
        for text in sorted(texts, key=str):
            grid.footnotes.append(f"protocol of {c.header}: {summarize(text)}")


def _grid_row(
    grid: Grid,
    tdef: TableDef,
    key: tuple[str, ...],
    is_ext: int,
    who: str,
    stats: RowStats,
    reported: dict[tuple[str, ...], float],
    labelled: bool,
    show_n: bool,
) -> GridRow:
    cells = list(stats.cells)
    rep = reported.get(stats.key) if is_ext else None
    mean = None
    if tdef.avg:
        avg = stats.avg
        if is_ext:  # a source's Avg. as printed; our mean only where it printed none
            mean = row_mean([c.mean if c else None for c in cells])
            shown = rep if rep is not None else mean
            avg = None if shown is None else Estimate(shown, None, 0)
        cells.append(avg)
    ns = sorted({c.n for c in cells if c is not None})
    n_text = "" if is_ext or not ns else (str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}")
    row = GridRow(
        keys=[*key, *([who] if labelled else []), *([n_text] if show_n else [])],
        values=[c.mean if c else None for c in cells],
        cis=[c.ci if c else None for c in cells],
    )
    if mean is not None and rep is not None and abs(rep - mean) > AVG_TOLERANCE + 1e-9:
        n_vals = len(cells) - 1
        grid.footnotes.append(
            f"{who} reports Avg. {rep:.{tdef.decimals}f} for {' / '.join(stats.key)} (shown); "
            f"the mean of the row's {n_vals} scores is {mean:.{tdef.decimals}f}."
        )
        row.marks[n_vals] = len(grid.footnotes)
    return row


def row_mean(values: Sequence[float | None]) -> float | None:
    """Plain mean of a row, computed in decimal from the values' shortest representation
    (so 2-decimal inputs give the exact mean); None if any cell is missing."""
    if not values or any(v is None or v != v for v in values):
        return None
    total = sum((Decimal(repr(v)) for v in values), Decimal(0))
    return float(total / len(values))


def natural_key(text: Any) -> list[Any]:
    return [
        (0, int(t), "") if t.isdigit() else (1, 0, t.lower())
        for t in re.split(r"(\d+)", str(text))
        if t
    ]


def _row_rank(tdef: TableDef, key: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for dim, value in zip(tdef.rows, key, strict=True):
        order = tdef.row_order.get(dim, [])
        out.append((order.index(value) if value in order else len(order), natural_key(value)))
    return out


# --- generic pivot ----------------------------------------------------------------------------


def pivot(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[str],
    cols: Sequence[str],
    where: Sequence[tuple[str, str]] = (),
    *,
    source: Literal["scores", "metrics"] = "scores",
    aggregate: str = "mean",
    decimals: int = 2,
    run: str | None = None,
) -> Grid:
    """Group `source` rows by `rows` × `cols` and aggregate their values.

    scores: every eval score row; fields include suite, benchmark, metric, step.
    metrics: each node's last logged value of every key; fields include key.
    """
    if aggregate not in AGGREGATES:
        raise UsageError(f"--agg {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
    if not rows or not cols:
        raise UsageError("pivot needs at least one --rows field and one --cols field")
    extra = SCORE_FIELDS if source == "scores" else METRIC_FIELDS
    check_fields(con, [*rows, *cols, *(k for k, _ in where)], extra)
    params = _Params()
    dims = [
        f"CAST({field_sql(d, params, extra)} AS VARCHAR) AS d{i}"
        for i, d in enumerate([*rows, *cols])
    ]
    conds = [f"CAST({field_sql(k, params, extra)} AS VARCHAR) = {params(v)}" for k, v in where]
    conds += _filter_sql(Filter(kind=None), params, None, run) or ["TRUE"]
    if source == "scores":
        base = "nodes n JOIN scores s ON s.fingerprint = n.fingerprint"
    else:
        base = (
            "nodes n JOIN (SELECT fingerprint, key, arg_max(value, step) AS value FROM metrics "
            "GROUP BY fingerprint, key) m ON m.fingerprint = n.fingerprint"
        )
    value = "s.value" if source == "scores" else "m.value"
    groups = ", ".join(f"d{i}" for i in range(len(rows) + len(cols)))
    sql = (
        f"SELECT {groups}, {AGGREGATES[aggregate]}(v) FROM (SELECT {', '.join(dims)}, {value} AS v "
        f"FROM {base} WHERE {' AND '.join(conds)}) GROUP BY {groups}"
    )
    recs = con.execute(sql, params.values).fetchall()
    nr, nc = len(rows), len(cols)
    col_keys = sorted(
        {tuple(r[nr : nr + nc]) for r in recs}, key=lambda k: [natural_key(x) for x in k]
    )
    row_keys = sorted({tuple(r[:nr]) for r in recs}, key=lambda k: [natural_key(x) for x in k])
    cells = {(tuple(r[:nr]), tuple(r[nr : nr + nc])): r[-1] for r in recs}
    grid = Grid(
        title="",
        key_headers=list(rows),
        value_headers=["/".join("–" if x is None else x for x in c) for c in col_keys],
        rows=[],
        decimals=decimals,
    )
    for rk in row_keys:
        grid.rows.append(
            GridRow(
                keys=["–" if x is None else x for x in rk],
                values=[cells.get((rk, ck)) for ck in col_keys],
            )
        )
    return grid


def parse_where(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--where {item!r}: expected key=value")
        out.append((key.strip(), value))
    return out


# --- for the run layer -------------------------------------------------------------------------


def publish_tables(
    workspace: str | Path, spec_name: str, run: str | None = None
) -> list[tuple[str, str]]:
    """(table name, markdown) for every defined table that has rows for this spec's nodes.

    Called when a run ends (the run layer turns them into Prefect table artifacts). Tables
    whose `filter.spec` does not match `spec_name` are skipped. Never raises for a missing
    index: returns [] instead.
    """
    from .store import IndexMissingError, reader

    defs = load_definitions(tables_dirs(workspace))
    out = []
    try:
        with reader(workspace) as con:
            for name, tdef in sorted(defs.items()):
                if tdef.filter.spec is not None and not fnmatch.fnmatchcase(
                    spec_name, tdef.filter.spec
                ):
                    continue
                try:
                    grid = compute_table(con, tdef, spec=spec_name, run=run)
                except ResultsError:
                    continue
                if grid.rows:
                    out.append((name, render(grid, "markdown")))
    except IndexMissingError:
        return []
    return out
