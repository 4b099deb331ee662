"""Can a spec fill the tables it names? Checked at `--plan`, before anything runs.

For each table in the spec's `tables:`, the plan's eval nodes that pass the table's filter
give the rows (their labels) and, from their suites, the benchmarks and metrics they will
report. A row a paper table's `row_order` expects but no node provides, and a cell whose
benchmark no suite evaluates or whose metric no suite reports, is named with the reason.
Metrics are predicted per suite type (`SUITE_METRICS`); a rules or lm-eval suite reports one
of several depending on its rows, so a column matching any of them counts as fillable.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psft_orchestrator.plan.planner import Node, Plan

    from .tables import TableDef

SUITE_METRICS: dict[str, tuple[str, ...]] = {
    "math": ("avg@{k}", "pass@{k}"),
    "rules": ("strict_acc", "loose_acc", "exact_match"),
    "lmeval": ("acc", "acc_norm", "exact_match"),
    "judge": ("score", "win_rate", "unparsed"),
}
MAX_LISTED = 8


def table_notes(plan: Plan) -> list[str]:
    """One line per problem with the spec's tables (empty when every cell can be filled)."""
    from .store import UsageError
    from .tables import get_definition, tables_dirs

    notes = []
    for name in plan.pipeline.tables:
        try:
            tdef = get_definition(name, tables_dirs(plan.workspace))
        except UsageError as e:
            notes.append(f"table {name}: {e}")
            continue
        notes += [f"table {name}: {line}" for line in check_table(plan, tdef)]
    return notes


def check_table(plan: Plan, tdef: TableDef) -> list[str]:
    nodes = [n for n in plan.nodes if _passes(n, plan.pipeline.name, tdef)]
    if not nodes:
        return ["no eval node of this spec passes the table's filter; the table will be empty"]
    rows: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    for node in nodes:
        key = tuple(str(node.labels.get(d, _field(node, d))) for d in tdef.rows)
        rows.setdefault(key, set()).update(_reports(node))
    out = _missing_rows(tdef, rows)
    if tdef.columns is None:
        return out
    for key, reports in sorted(rows.items()):
        empty = [_why_empty(col, reports, tdef) for col in tdef.columns]
        empty = [e for e in empty if e]
        if empty:
            shown = "; ".join(empty[:MAX_LISTED]) + ("; ..." if len(empty) > MAX_LISTED else "")
            out.append(f"row {' / '.join(key)}: {len(empty)} empty cells: {shown}")
    return out


def _passes(node: Node, spec_name: str, tdef: TableDef) -> bool:
    f = tdef.filter
    checks = [
        (f.spec, spec_name),
        (f.stage, node.stage),
        (f.kind, node.kind),
    ]
    if any(glob is not None and not fnmatch.fnmatchcase(value, glob) for glob, value in checks):
        return False
    return all(str(node.labels.get(k)) == str(v) for k, v in f.labels.items())


def _field(node: Node, name: str) -> Any:
    return {"stage": node.stage, "kind": node.kind, "backend": node.backend}.get(name, "–")


def _reports(node: Node) -> set[tuple[str, str]]:
    """(benchmark lower-case, metric) pairs the node's suites can report."""
    out = set()
    for suite in getattr(node.stage_model, "suites", []):
        metrics = [m.format(k=getattr(suite, "k", 1)) for m in SUITE_METRICS.get(suite.type, ())]
        if suite.type == "judge":
            from psft_orchestrator.configs.evals import PROTOCOL_METRICS

            metrics = [*PROTOCOL_METRICS[suite.protocol], "unparsed"]
        for bench in getattr(suite, "benchmarks", []) or []:
            out |= {(bench.lower(), m) for m in metrics}
    return out


def _missing_rows(tdef: TableDef, rows: dict[tuple[str, ...], set]) -> list[str]:
    """The paper's rows (a paper table's `row_order`) that no node provides."""
    out: list[str] = []
    if tdef.paper_table is None:  # elsewhere row_order only orders rows
        return out
    for i, dim in enumerate(tdef.rows):
        have = {key[i] for key in rows}
        missing = [v for v in tdef.row_order.get(dim, []) if v not in have]
        if missing:
            out.append(
                f"no rows with {dim} {', '.join(missing)}: no eval node of this spec has that "
                f"{dim} (it has {', '.join(sorted(have))})"
            )
    return out


def _why_empty(col: Any, reports: set[tuple[str, str]], tdef: TableDef) -> str:
    benches = {b.lower() for b in col.benchmark}
    metrics = [m for b, m in reports if b in benches]
    if not metrics:
        return f"{col.header} (no suite evaluates {'/'.join(col.benchmark)})"
    globs = col.metric or tdef.metric
    if not any(fnmatch.fnmatchcase(m, g) for m in metrics for g in globs):
        return (
            f"{col.header} (its suite reports {', '.join(sorted(set(metrics)))}; "
            f"the column reads {', '.join(globs)})"
        )
    return ""
