"""`psft-results`: browse the results index, print paper tables, draw figures.

Argument parsing only; every command imports DuckDB, pandas and matplotlib lazily so that
`psft-results --help` stays instant. Exit status: 0 ok, 1 runtime failure (locked or missing
index, no data), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FIGURE_KINDS = ("dynamics", "eval", "dpo-rewards", "clipped-tokens")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from psft_orchestrator.results.store import ResultsError, UsageError

    try:
        return args.func(args) or 0
    except UsageError as e:
        print(_as_error(e), file=sys.stderr)
        return 2
    except ResultsError as e:
        print(_as_error(e), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


def _as_error(e: Exception) -> str:
    text = str(e)
    return text if text.startswith("error:") else f"error: {text}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="psft-results",
        description="Query the results index (<workspace>/index.duckdb), print paper tables, draw figures.",
    )
    p.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="workspace directory (default: $PSFT_WORKSPACE or results/)",
    )
    sub = p.add_subparsers(metavar="COMMAND")
    _add_browse_commands(sub)
    _add_table_commands(sub)
    _add_statistics_commands(sub)
    _add_plot_command(sub)
    _add_store_commands(sub)
    return p


Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def _command(
    sub: Subparsers, name: str, func: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    sp = sub.add_parser(name, help=help, description=help)
    sp.set_defaults(func=func)
    return sp


def _format_arg(sp: argparse.ArgumentParser, choices: tuple[str, ...], default: str) -> None:
    sp.add_argument(
        "--format", choices=choices, default=default, help=f"output format (default {default})"
    )


def _run_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--run", default=None, help="only nodes of this run (id, prefix or 'latest')")


def _add_browse_commands(sub: Subparsers) -> None:
    sp = _command(sub, "runs", cmd_runs, "list runs, newest first")
    _format_arg(sp, ("table", "csv", "json"), "table")

    sp = _command(
        sub, "nodes", cmd_nodes, "list the nodes of a run (run id, a prefix of it, or 'latest')"
    )
    sp.add_argument("run")
    _format_arg(sp, ("table", "csv", "json"), "table")

    sp = _command(sub, "metrics", cmd_metrics, "a node's logged metrics by step")
    sp.add_argument("node", help="fingerprint prefix or node id")
    sp.add_argument("--keys", default=None, help="comma-separated metric keys (default: all)")
    sp.add_argument("--tail", type=int, default=None, help="only the last N steps")
    _format_arg(sp, ("table", "csv", "json"), "table")

    sp = _command(
        sub, "lineage", cmd_lineage, "a node's ancestors, declared inputs and direct children"
    )
    sp.add_argument("node", help="fingerprint prefix or node id")

    sp = _command(
        sub, "export", cmd_export, "write a node's model as a plain Hugging Face directory"
    )
    sp.add_argument("node", help="fingerprint prefix or node id")
    sp.add_argument("dir", type=Path, help="new directory to write (must not exist)")

    sp = _command(sub, "query", cmd_query, "run one read-only SQL SELECT against the index")
    sp.add_argument("sql")
    _format_arg(sp, ("table", "csv", "json"), "table")


def _add_table_commands(sub: Subparsers) -> None:
    sp = _command(sub, "tables", cmd_tables, "list table definitions")
    sp.add_argument(
        "--tables-dir",
        type=Path,
        action="append",
        default=None,
        help="definition directory (repeatable; default: results/tables and <workspace>/tables)",
    )

    _add_table_command(sub)
    _add_pivot_command(sub)
    sp = _command(
        sub,
        "import",
        cmd_import,
        "load published results (CSV: table,model,method,benchmark,score[,reported_avg])",
    )
    sp.add_argument("file", type=Path)
    sp.add_argument("--source", required=True, help="a name for these numbers, e.g. paper")
    _command(
        sub,
        "reindex",
        cmd_reindex,
        "rebuild the index from the workspace's artifacts, run records and imports",
    )


def _add_table_command(sub: Subparsers) -> None:
    sp = _command(sub, "table", cmd_table, "compute and print one defined table")
    sp.add_argument("name")
    _format_arg(sp, ("markdown", "latex", "csv", "json"), "markdown")
    sp.add_argument(
        "--source",
        default=None,
        help="compute from imported results of this source instead of our runs",
    )
    sp.add_argument(
        "--with-paper", action="store_true", help="put the paper's reported numbers beside ours"
    )
    sp.add_argument(
        "--paper-source",
        default="paper",
        help="imported source used by --with-paper (default: paper)",
    )
    sp.add_argument("--spec", default=None, help="only nodes of this spec")
    _run_arg(sp)
    sp.add_argument(
        "--per-seed",
        action="store_true",
        help="one row per seed instead of the mean over seeds with its 95%% CI",
    )
    sp.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    sp.add_argument("--tables-dir", type=Path, action="append", default=None)
    sp.add_argument(
        "--protocol",
        action="store_true",
        help="add each column's evaluation protocols (backend, sampling, k, judge, versions)",
    )


def _add_pivot_command(sub: Subparsers) -> None:
    sp = _command(
        sub, "pivot", cmd_pivot, "group eval scores (or final metrics) into a rows x columns table"
    )
    sp.add_argument(
        "--rows", required=True, help="comma-separated fields/labels, e.g. model,method"
    )
    sp.add_argument("--cols", required=True, help="comma-separated fields/labels, e.g. benchmark")
    sp.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE", help="filter (repeatable)"
    )
    sp.add_argument(
        "--from",
        dest="source",
        choices=("scores", "metrics"),
        default="scores",
        help="scores: eval scores; metrics: each node's last value of every key",
    )
    sp.add_argument(
        "--agg", default="mean", help="mean, median, min or max over matching rows (default mean)"
    )
    sp.add_argument("--decimals", type=int, default=2)
    _run_arg(sp)
    _format_arg(sp, ("markdown", "latex", "csv", "json", "table"), "markdown")


def _add_statistics_commands(sub: Subparsers) -> None:

    sp = _command(
        sub,
        "compare",
        cmd_compare,
        "paired difference A - B (methods or eval nodes) over benchmark items and seeds, "
        "with a bootstrap 95%% CI and p-value",
    )
    sp.add_argument("a", help="a method (eval nodes' method label), node id or fingerprint prefix")
    sp.add_argument("b", help="the same for the other side")
    sp.add_argument(
        "--benchmark", default="*", help="benchmark name or glob, e.g. '*ood*' (default: all)"
    )
    _run_arg(sp)
    _format_arg(sp, ("table", "json"), "table")

    sp = _command(
        sub,
        "claims",
        cmd_claims,
        "the paper's four claims checked on the index: difference, 95%% CI, verdict",
    )
    _run_arg(sp)
    _format_arg(sp, ("table", "json"), "table")


def _add_plot_command(sub: Subparsers) -> None:
    sp = _command(sub, "plot", cmd_plot, "draw a figure as PNG")
    sp.add_argument(
        "kind",
        choices=FIGURE_KINDS,
        help="dynamics: metrics vs epochs, one colour and seed band per method (Fig. 1); "
        "eval: score vs step "
        "(Figs. 2-3); dpo-rewards: chosen/rejected rewards (Fig. 6b); clipped-tokens (Fig. 8)",
    )
    sp.add_argument(
        "--nodes", default=None, help="comma-separated fingerprint prefixes or node ids"
    )
    sp.add_argument("--run", default=None, help="nodes of this run")
    sp.add_argument("--spec", default=None, help="nodes of this spec")
    sp.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE", help="node filter (repeatable)"
    )
    sp.add_argument(
        "--keys",
        default=None,
        help="dynamics: metric keys (default entropy,ce,clipfrac,grad_norm; ce = token "
        "cross-entropy, comparable across methods, unlike PSFT's surrogate `loss`)",
    )
    sp.add_argument("--pretrain", action="store_true", help="dynamics: include pretraining nodes")
    sp.add_argument(
        "--benchmarks", default=None, help="eval: comma-separated benchmark globs (default all)"
    )
    sp.add_argument(
        "--mean", action="store_true", help="eval: one panel with the mean over the benchmarks"
    )
    sp.add_argument("--top", type=int, default=20, help="clipped-tokens: how many tokens")
    sp.add_argument(
        "--out", type=Path, default=None, help="PNG path (default <workspace>/figures/<kind>.png)"
    )


def _add_store_commands(sub: Subparsers) -> None:
    sp = _command(
        sub,
        "store",
        cmd_store,
        "the store shared across workspaces: its size and entries; `store gc` removes the "
        "entries no registered workspace's index refers to",
    )
    sp.add_argument("action", nargs="?", choices=("gc",), help="gc: remove unreferenced entries")
    sp.add_argument(
        "--store",
        type=Path,
        default=None,
        help="the store (default: $PSFT_STORE, else ~/.cache/psft-orchestrator/store)",
    )
    sp.add_argument(
        "--min-age",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="gc: keep entries published less than this long ago (a run may not have indexed "
        "them yet; default 3600)",
    )
    sp.add_argument("--dry-run", action="store_true", help="gc: list what would be removed")
    _format_arg(sp, ("table", "json"), "table")


# --- helpers ------------------------------------------------------------------------------------


def _workspace(args: argparse.Namespace) -> Path:
    from psft_orchestrator.results.store import default_workspace

    return args.workspace or default_workspace()


def _print_records(head: list[str], rows: list[Sequence[Any]], fmt: str) -> None:
    import csv
    import json

    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(head)
        w.writerows([[("" if v is None else v) for v in r] for r in rows])
    elif fmt == "json":
        print(json.dumps([dict(zip(head, r, strict=True)) for r in rows], indent=2, default=str))
    else:
        from psft_orchestrator.results.render import text_table

        body = [[_cell(v) for v in r] for r in rows]
        numeric = {
            i
            for i in range(len(head))
            if rows and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        }
        sys.stdout.write(text_table(head, body, right=numeric))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _resolve_node(con: Any, ref: str) -> str:
    """A fingerprint prefix or a node id -> one fingerprint."""
    from psft_orchestrator.results.store import UsageError

    hits = con.execute(
        "SELECT fingerprint, node_id, run_id FROM nodes WHERE starts_with(fingerprint, lower(?)) OR node_id = ? "
        "ORDER BY ended_at DESC NULLS LAST",
        [ref, ref],
    ).fetchall()
    if not hits:
        raise UsageError(
            f"no node matches {ref!r} (give a fingerprint prefix or a node id; "
            f"`psft-results nodes latest` lists them)"
        )
    if len(hits) > 1:
        listing = "\n".join(f"  {fp[:16]}  {nid}  (run {run})" for fp, nid, run in hits[:10])
        raise UsageError(
            f"{ref!r} matches {len(hits)} nodes; give a longer fingerprint prefix:\n{listing}"
        )
    return hits[0][0]


# --- commands -------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.store import reader

    with reader(_workspace(args)) as con:
        rel = con.execute(
            "SELECT run_id, spec_name, status, n_nodes, "
            "(SELECT count(*) FROM run_nodes rn WHERE rn.run_id = r.run_id AND rn.status = 'failed') AS failed, "
            "strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started, "
            "round(epoch(ended_at - started_at), 1) AS seconds FROM runs r ORDER BY started_at DESC NULLS LAST, run_id"
        )
        head = [d[0] for d in rel.description]
        _print_records(head, rel.fetchall(), args.format)
    return 0


def _run_id(con, run: str) -> str:
    """A run id from 'latest' or a unique prefix."""
    from psft_orchestrator.results.store import UsageError

    if run == "latest":
        hit = con.execute(
            "SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST LIMIT 1"
        ).fetchall()
    else:
        hit = con.execute(
            "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [run]
        ).fetchall()
    if not hit:
        raise UsageError(f"no run matches {run!r}; `psft-results runs` lists them")
    if len(hit) > 1:
        raise UsageError(f"{run!r} matches {len(hit)} runs: {', '.join(r[0] for r in hit[:8])}")
    return hit[0][0]


def cmd_nodes(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.store import reader

    with reader(_workspace(args)) as con:
        hit = [(_run_id(con, args.run),)]
        rel = con.execute(
            "SELECT rn.node_id, rn.stage, n.kind, rn.status, rn.cached, round(rn.duration_s, 1) AS seconds, "
            "left(rn.fingerprint, 16) AS fingerprint, n.method, n.model, n.seed, "
            "split_part(rn.error, chr(10), 1) AS error "  # the first line; the log has the rest
            "FROM run_nodes rn LEFT JOIN nodes n ON n.fingerprint = rn.fingerprint "
            "WHERE rn.run_id = ? ORDER BY rn.stage, rn.node_id",
            [hit[0][0]],
        )
        _print_records([d[0] for d in rel.description], rel.fetchall(), args.format)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.store import ResultsError, reader

    with reader(_workspace(args)) as con:
        fp = _resolve_node(con, args.node)
        keys = (
            [k.strip() for k in args.keys.split(",") if k.strip()]
            if args.keys
            else [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT key FROM metrics WHERE fingerprint = ? ORDER BY key", [fp]
                ).fetchall()
            ]
        )
        if not keys:
            raise ResultsError(f"node {fp[:16]} logged no numeric metrics")
        known = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT key FROM metrics WHERE fingerprint = ?", [fp]
            ).fetchall()
        }
        missing = [k for k in keys if k not in known]
        if missing:
            from psft_orchestrator.results.store import UsageError

            raise UsageError(
                f"node {fp[:16]} has no metric {', '.join(map(repr, missing))}; it logged: {', '.join(sorted(known))}"
            )
        # last(): a step logged twice (a resumed node) shows its latest value.
        full = con.execute(
            "SELECT step, key, last(value) FROM metrics WHERE fingerprint = ? AND list_contains(?::VARCHAR[], key) "
            "GROUP BY step, key",
            [fp, keys],
        ).fetchall()
        by_step: dict[Any, dict[str, float]] = {}
        for step, key, value in full:
            by_step.setdefault(step, {})[key] = value
        steps = sorted(by_step, key=lambda s: (s is None, s))
        if args.tail:
            steps = steps[-args.tail :]
        _print_records(
            ["step", *keys], [[s, *(by_step[s].get(k) for k in keys)] for s in steps], args.format
        )
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.store import reader

    with reader(_workspace(args)) as con:
        fp = _resolve_node(con, args.node)
        up = con.execute(
            """
            WITH RECURSIVE up(fp, depth, path) AS (
                SELECT ?::VARCHAR, 0, [?::VARCHAR]
                UNION ALL
                SELECT l.parent, u.depth + 1, list_append(u.path, l.parent)
                FROM up u JOIN lineage l ON l.child = u.fp
                WHERE NOT list_contains(u.path, l.parent) AND u.depth < 100
            )
            SELECT u.depth, u.fp, coalesce(n.node_id, l2.parent_node_id, '?'), n.kind,
                   n.artifact_path, n.fingerprint IS NOT NULL AS indexed
            FROM (SELECT fp, min(depth) AS depth FROM up GROUP BY fp) u
            LEFT JOIN nodes n ON n.fingerprint = u.fp
            LEFT JOIN (SELECT parent, any_value(parent_node_id) AS parent_node_id FROM lineage GROUP BY parent) l2
                   ON l2.parent = u.fp
            ORDER BY u.depth, 3
            """,
            [fp, fp],
        ).fetchall()
        children = con.execute(
            "SELECT l.child, n.node_id, n.kind FROM lineage l LEFT JOIN nodes n ON n.fingerprint = l.child "
            "WHERE l.parent = ? ORDER BY n.node_id",
            [fp],
        ).fetchall()
    for depth, nfp, node_id, kind, artifact_path, indexed in up:
        label = "this node" if depth == 0 else f"ancestor, depth {depth}"
        extra = "" if indexed else "  [not in the index]"
        print(f"{'  ' * depth}{nfp[:16]}  {node_id}  ({kind or '?'}; {label}){extra}")
        for line in _declared_inputs(artifact_path):
            print(f"{'  ' * depth}  {line}")
    for cfp, node_id, kind in children:
        print(f"child: {cfp[:16]}  {node_id or '?'}  ({kind or '?'})")
    return 0


def _declared_inputs(artifact_path: str | None) -> list[str]:
    """`input model: qwen (model) /path` lines for the inputs that no stage produced."""
    import json

    try:
        manifest = json.loads((Path(artifact_path) / "manifest.json").read_text())
    except (OSError, TypeError, ValueError):
        return []
    produced = {p.get("slot") for p in manifest.get("parents", [])}
    lines = []
    for slot, refs in manifest.get("inputs", {}).items():
        if slot in produced:
            continue
        for ref in refs if isinstance(refs, list) else [refs]:
            lines.append(f"input {slot}: {ref.get('name')} ({ref.get('type')}) {ref.get('path')}")
    return lines


def cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from psft_orchestrator.results.store import UsageError, reader

    with reader(_workspace(args)) as con:
        fp = _resolve_node(con, args.node)
        node_id, output_type, artifact_path = con.execute(
            "SELECT node_id, output_type, artifact_path FROM nodes WHERE fingerprint = ?", [fp]
        ).fetchone()
    src = Path(artifact_path) / "outputs" / "model"
    if output_type != "model" or not src.is_dir():
        raise UsageError(f"{node_id} produced {output_type}, not a model: nothing to export")
    if args.dir.exists():
        raise UsageError(f"{args.dir} exists; give a new directory")
    tmp = args.dir.with_name(f".{args.dir.name}.tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.rename(args.dir)  # all or nothing
    print(f"exported {node_id} ({fp[:16]}) to {args.dir}")
    print(
        "load it with:\n  from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"  model = AutoModelForCausalLM.from_pretrained({str(args.dir)!r})\n"
        f"  tokenizer = AutoTokenizer.from_pretrained({str(args.dir)!r})"
    )
    return 0


_ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from psft_orchestrator.results.store import UsageError, reader

    try:
        statements = duckdb.extract_statements(args.sql)
    except duckdb.Error as e:
        raise UsageError(f"SQL does not parse: {e}") from None
    if len(statements) != 1:
        raise UsageError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _ALLOWED_STATEMENTS:
        raise UsageError(
            f"`query` is read-only: {kind} statements are refused. The index is written only by runs, "
            f"`psft-results import` and `psft-results reindex`."
        )
    with reader(_workspace(args), sandbox=True) as con:
        try:
            rel = con.execute(args.sql)
        except duckdb.Error as e:
            raise UsageError(f"query failed: {e}") from None
        head = [d[0] for d in rel.description] if rel.description else []
        _print_records(head, rel.fetchall(), args.format)
    return 0


def _dirs(args: argparse.Namespace) -> list[Path]:
    from psft_orchestrator.results.tables import tables_dirs

    return list(args.tables_dir) if args.tables_dir else tables_dirs(_workspace(args))


def cmd_tables(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.render import text_table
    from psft_orchestrator.results.tables import load_definitions

    defs = load_definitions(_dirs(args))
    body = [
        [
            name,
            d.title,
            "auto" if d.auto else str(len(d.columns or [])),
            d.paper_table or "",
            d.filter.spec or "*",
            d.source_file,
        ]
        for name, d in sorted(defs.items())
    ]
    sys.stdout.write(text_table(["name", "title", "columns", "paper", "spec", "file"], body))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.render import render
    from psft_orchestrator.results.store import ResultsError, reader
    from psft_orchestrator.results.tables import compute_table, get_definition

    tdef = get_definition(args.name, _dirs(args))
    with reader(_workspace(args)) as con:
        if args.source:
            _check_source(con, args.source, tdef.paper_table)
        if args.with_paper and not args.source:
            _check_source(con, args.paper_source, tdef.paper_table)
        grid = compute_table(
            con,
            tdef,
            source=args.source,
            with_paper=args.paper_source if args.with_paper and not args.source else None,
            spec=args.spec,
            run=_run_id(con, args.run) if args.run else None,
            per_seed=args.per_seed,
            show_protocol=args.protocol,
        )
    if not grid.rows:
        where = f"imported source {args.source!r}" if args.source else "the index"
        raise ResultsError(
            f"table {tdef.name}: no rows; nothing in {where} matches its filter "
            f"({tdef.filter.model_dump(exclude_defaults=False, exclude_none=True)}). "
            f"Run the spec it describes, or see the paper's numbers with --source paper."
        )
    text = render(grid, args.format)
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def _check_source(con: Any, source: str, paper_table: str | None) -> None:
    from psft_orchestrator.results.store import ResultsError

    n = con.execute("SELECT count(*) FROM external_results WHERE source = ?", [source]).fetchall()[
        0
    ][0]
    if not n:
        raise ResultsError(
            f"no imported results named {source!r}; load them with "
            f"`psft-results import FILE.csv --source {source}`"
        )


def cmd_pivot(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.render import render
    from psft_orchestrator.results.store import reader
    from psft_orchestrator.results.tables import parse_where, pivot

    rows = [x.strip() for x in args.rows.split(",") if x.strip()]
    cols = [x.strip() for x in args.cols.split(",") if x.strip()]
    where = parse_where(args.where)
    with reader(_workspace(args)) as con:
        grid = pivot(
            con,
            rows,
            cols,
            where,
            source=args.source,
            aggregate=args.agg,
            decimals=args.decimals,
            run=_run_id(con, args.run) if args.run else None,
        )
    sys.stdout.write(render(grid, args.format))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from psft_orchestrator.results.ingest import import_external, save_external
    from psft_orchestrator.results.store import writer

    ws = _workspace(args)
    saved = save_external(ws, args.file, args.source)
    with writer(ws) as con:
        n = import_external(con, saved, args.source)
    print(f"imported {n} rows as source {args.source!r} (kept in {saved}; `reindex` reloads it)")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    import time

    from psft_orchestrator.results.ingest import reindex

    t0 = time.perf_counter()
    stats = reindex(_workspace(args))
    print(
        f"indexed {stats.nodes} nodes, {stats.runs} run records, {stats.external} imported rows "
        f"into {stats.path} in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from psft_orchestrator.results.compare import compare
    from psft_orchestrator.results.store import reader

    with reader(_workspace(args)) as con:
        run = _run_id(con, args.run) if args.run else None
        result = compare(con, args.a, args.b, args.benchmark, run)
    if args.format == "json":
        print(json.dumps(result.as_dict(), indent=2))
    else:
        sys.stdout.write(result.text())
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from psft_orchestrator.results.claims import check_claims, render_claims
    from psft_orchestrator.results.store import reader

    with reader(_workspace(args)) as con:
        run = _run_id(con, args.run) if args.run else None
        claims = check_claims(con, run)
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(c) for c in claims], indent=2))
    else:
        sys.stdout.write(render_claims(claims))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from psft_orchestrator.results import figures
    from psft_orchestrator.results.store import reader
    from psft_orchestrator.results.tables import parse_where

    ws = _workspace(args)
    out = args.out or ws / "figures" / f"{args.kind.replace('-', '_')}.png"
    with reader(ws) as con:
        nodes = (
            [_resolve_node(con, r.strip()) for r in args.nodes.split(",")] if args.nodes else None
        )
        run = _run_id(con, args.run) if args.run else None
        sel = figures.Selection(nodes=nodes, run=run, spec=args.spec, where=parse_where(args.where))
        if args.kind == "dynamics":
            keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
            fig = figures.training_dynamics(con, sel, keys, pretrain=args.pretrain)
        elif args.kind == "eval":
            globs = [b.strip() for b in args.benchmarks.split(",")] if args.benchmarks else ["*"]
            fig = figures.eval_vs_step(con, sel, globs, mean=args.mean)
        elif args.kind == "dpo-rewards":
            fig = figures.dpo_rewards(con, sel)
        else:
            fig = figures.clipped_tokens(con, sel, top=args.top)
    figures.save(fig, out)
    print(f"wrote {out}")
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    import json

    from psft_orchestrator.results.store import UsageError
    from psft_orchestrator.run.shared_store import (
        SharedStore,
        collect_garbage,
        default_root,
        usage,
    )

    root = args.store or default_root()
    if root is None:
        raise UsageError("the shared store is off (PSFT_STORE=off); give --store DIR")
    if root.exists() and not root.is_dir():
        raise UsageError(f"the shared store {root} is a file, not a directory")
    if args.min_age < 0:
        raise UsageError("--min-age must be >= 0")
    shared = SharedStore(root)
    removed = None
    if args.action == "gc":
        removed = collect_garbage(shared, args.min_age, dry_run=args.dry_run)
    info = usage(shared)
    if removed is not None:
        info["removed" if not args.dry_run else "would_remove"] = removed
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"store {info['root']}: {info['entries']} entries, {info['bytes'] / 1e6:.1f} MB, "
        f"{info['workspaces']} workspaces, {info['claims']} live claims"
    )
    if removed is not None:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} entries" + "".join(f"\n  {fp}" for fp in removed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
