"""The paper's figures, redrawn from the index as PNG (matplotlib, Agg backend).

- `training_dynamics`: entropy / token cross-entropy / clipfrac / grad_norm against epochs (or
  steps, for nodes that do not log `epoch`), one line per method: the mean over its seeds,
  with a band from the lowest to the highest seed (Fig. 1). Not optimizer steps, since PSFT
  takes train batch / mini-batch times as many. Pretraining is left out unless asked for.
  `ce` (token cross-entropy, logged for every method) is the comparable loss; PSFT's `loss`
  is its clipped surrogate, about -1, and is not plotted by default.
- `eval_vs_step`: score vs epochs (or steps) from intermediate evals, mean line and seed band
  per method (Figs. 2-3, 5, 9).

Each method has one colour in every panel and figure (`method_colour`).
- `dpo_rewards`: DPO rewards/chosen and rewards/rejected vs step (Fig. 6b).
- `clipped_tokens`: the most often clipped tokens (Fig. 8), from `clipped_tokens.jsonl` in the
  node directory ({"step": N, "clipped_tokens": [[token, count], ...]} per line, as the native
  trainer writes it; counts are per interval and are summed), or else from a
  non-numeric metric `clipped_tokens` logged in metrics.jsonl (same [[token, count], ...]).

Each function returns a matplotlib Figure (tests inspect its lines); `save()` writes it.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psft_orchestrator.contract import CLIPPED_TOKENS_FILE, CLIPPED_TOKENS_KEY

from .store import ResultsError
from .tables import _Params, check_fields, field_sql

if TYPE_CHECKING:
    import duckdb
    from matplotlib.figure import Figure


@dataclass
class Selection:
    """Which nodes a figure draws: explicit fingerprints, or a run / spec / label filter."""

    nodes: list[str] | None = None
    run: str | None = None
    spec: str | None = None
    where: list[tuple[str, str]] = field(default_factory=list)

    def sql(self, con: duckdb.DuckDBPyConnection, params: _Params) -> str:
        conds = []
        if self.nodes:
            conds.append(f"n.fingerprint IN (SELECT unnest({params(self.nodes)}::VARCHAR[]))")
        if self.run:
            conds.append(
                f"(n.run_id = {params(self.run)} OR n.fingerprint IN "
                f"(SELECT fingerprint FROM run_nodes WHERE run_id = {params(self.run)}))"
            )
        if self.spec:
            conds.append(f"n.spec_name = {params(self.spec)}")
        if self.where:
            check_fields(con, [k for k, _ in self.where], {})
        for key, value in self.where:
            conds.append(f"CAST({field_sql(key, params)} AS VARCHAR) = {params(value)}")
        return " AND ".join(conds) or "TRUE"


def _nodes(
    con: duckdb.DuckDBPyConnection,
    sel: Selection,
    extra_where: str = "TRUE",
    params: _Params | None = None,
) -> list[tuple[str, str]]:
    """(fingerprint, legend label) of the selected nodes, ordered by method then seed.
    `params`: the parameters already bound in `extra_where`."""
    params = params or _Params()
    where = sel.sql(con, params)
    rows = con.execute(
        f"SELECT n.fingerprint, n.method, n.seed, n.node_id, n.model FROM nodes n WHERE {where} AND {extra_where} "
        "ORDER BY n.model, n.method, n.seed, n.node_id",
        params.values,
    ).fetchall()
    methods = [r[1] for r in rows]
    models = {r[4] for r in rows}
    out = []
    for fp, method, seed, node_id, model in rows:
        label = method or node_id
        if method and len(models) > 1:
            label = f"{model} {method}"
        if method and methods.count(method) > 1:
            label += f" (seed {seed})" if seed is not None else f" ({fp[:8]})"
        out.append((fp, label))
    return out


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


DEFAULT_DYNAMICS_KEYS = ("entropy", "ce", "clipfrac", "grad_norm")
# Fixed colours for the paper's methods; any other method gets a stable colour from its name.
METHOD_COLOURS = {
    "Original": "black",
    "SFT": "tab:blue",
    "PSFT": "tab:orange",
    "PSFT_warmup": "tab:green",
    "DFT": "tab:red",
    "SFT_KL": "tab:purple",
    "iwSFT": "tab:brown",
    "SFT_prolong": "tab:cyan",
    "PSFT_prolong": "tab:olive",
    "SFT->GRPO": "navy",
    "PSFT->GRPO": "darkorange",
    "SFT->DPO": "steelblue",
    "PSFT->DPO": "goldenrod",
}
_SPARE = ("tab:pink", "tab:gray", "darkgreen", "maroon", "teal", "indigo", "crimson", "sienna")


def method_colour(method: str) -> str:
    """The same colour for a method in every panel and every figure."""
    return METHOD_COLOURS.get(method) or _SPARE[zlib.crc32(method.encode()) % len(_SPARE)]


def _series(con: duckdb.DuckDBPyConnection, fp: str, key: str) -> tuple[list[float], list[float]]:
    rows = con.execute(
        "SELECT step, last(value) FROM metrics WHERE fingerprint = ? AND key = ? AND step IS NOT NULL "
        "GROUP BY step ORDER BY step",
        [fp, key],
    ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def _progress_series(
    con: duckdb.DuckDBPyConnection, fp: str, key: str
) -> tuple[str, dict[float, float]]:
    """{x: value} of one node's metric, x in epochs when the node logs `epoch`, else steps."""
    steps, values = _series(con, fp, key)
    epoch_steps, epochs = _series(con, fp, "epoch")
    if epochs:
        at = dict(zip(epoch_steps, epochs, strict=True))
        pts = {round(at[s], 6): v for s, v in zip(steps, values, strict=True) if s in at}
        if pts:
            return "epoch", pts
    return "step", dict(zip(map(float, steps), values, strict=True))


def _method_groups(
    con: duckdb.DuckDBPyConnection, sel: Selection, extra_where: str, params: _Params
) -> dict[tuple[str, str], list[str]]:
    """{(legend label, method): fingerprints of its seeds}, in model / method order."""
    where = sel.sql(con, params)
    rows = con.execute(
        f"SELECT n.fingerprint, coalesce(n.method, n.node_id), coalesce(n.model, '') FROM nodes n "
        f"WHERE {where} AND {extra_where} ORDER BY n.model, n.method, n.seed, n.node_id",
        params.values,
    ).fetchall()
    models = {r[2] for r in rows}
    groups: dict[tuple[str, str], list[str]] = {}
    for fp, method, model in rows:
        label = f"{model} {method}" if len(models) > 1 else method
        groups.setdefault((label, method), []).append(fp)
    return groups


def _band(ax: Any, per_seed: list[dict[float, float]], label: str, colour: str) -> None:
    """Mean over seeds as a line; lowest to highest seed as a band (x where every seed has it)."""
    xs = sorted(set.intersection(*(set(p) for p in per_seed)))
    if not xs:
        return
    ys = [[p[x] for p in per_seed] for x in xs]
    n = len(per_seed)
    name = label if n == 1 else f"{label} ({n} seeds)"
    ax.plot(xs, [sum(y) / n for y in ys], label=name, color=colour, linewidth=1.3)
    if n > 1:
        ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=colour, alpha=0.2)


def _metric_figure(
    con: duckdb.DuckDBPyConnection,
    sel: Selection,
    keys: list[str],
    title: str,
    pretrain: bool = False,
) -> Figure:
    params = _Params()
    has = f"n.fingerprint IN (SELECT fingerprint FROM metrics WHERE key IN (SELECT unnest({params(keys)}::VARCHAR[])))"
    if not pretrain:
        has += " AND n.kind <> 'pretrain'"
    groups = _method_groups(con, sel, has, params)
    if not groups:
        raise ResultsError(
            f"no selected node logged {', '.join(keys)}; check --run/--spec/--where/--nodes "
            f"(`psft-results metrics NODE` shows what a node logged)"
        )
    plt = _plt()
    ncols = min(len(keys), 2)
    nrows = (len(keys) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        units = set()
        for (label, method), fps in groups.items():
            series = [_progress_series(con, fp, key) for fp in fps]
            series = [(u, pts) for u, pts in series if pts]
            units |= {u for u, _ in series}
            if series:
                _band(ax, [pts for _, pts in series], label, method_colour(method))
        ax.set_title(key)
        ax.set_xlabel("epoch" if units == {"epoch"} else "step" if units else "")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_dynamics(
    con: duckdb.DuckDBPyConnection,
    sel: Selection,
    keys: list[str] | None = None,
    pretrain: bool = False,
) -> Figure:
    """Metrics vs epochs, one panel per key, one line + seed band per method (paper Fig. 1)."""
    return _metric_figure(
        con, sel, list(keys or DEFAULT_DYNAMICS_KEYS), "Training dynamics", pretrain
    )


def dpo_rewards(con: duckdb.DuckDBPyConnection, sel: Selection) -> Figure:
    """rewards/chosen and rewards/rejected vs step in one panel per node (paper Fig. 6b)."""
    keys = ["rewards/chosen", "rewards/rejected"]
    params = _Params()
    has = f"n.fingerprint IN (SELECT fingerprint FROM metrics WHERE key IN (SELECT unnest({params(keys)}::VARCHAR[])))"
    nodes = _nodes(con, sel, has, params)
    if not nodes:
        raise ResultsError(
            "no selected node logged rewards/chosen or rewards/rejected (DPO stages log them)"
        )
    plt = _plt()
    fig, axes = plt.subplots(1, len(nodes), figsize=(5.5 * len(nodes), 3.6), squeeze=False)
    for ax, (fp, label) in zip(axes.flat, nodes, strict=True):
        for key, color in zip(keys, ("tab:green", "tab:red"), strict=True):
            xs, ys = _series(con, fp, key)
            if xs:
                ax.plot(xs, ys, label=key.split("/")[1], color=color, linewidth=1.2)
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("DPO rewards")
    fig.tight_layout()
    return fig


def eval_vs_step(
    con: duckdb.DuckDBPyConnection, sel: Selection, benchmarks: list[str], mean: bool = False
) -> Figure:
    """Score vs training progress, one panel per benchmark (or their mean), one line per
    method: the mean over its seeds, with a lowest-to-highest seed band.

    Progress is the epoch the node logged at the score's step when every score has one
    (intermediate evals inside a training node), else the step: ScoreRow.step, or the eval
    node's `step` label (pipelines that evaluate each checkpoint with its own eval node).
    """
    params = _Params()
    where = sel.sql(con, params)
    globs = " OR ".join(f"s.benchmark GLOB {params(g)}" for g in benchmarks)
    step_label = field_sql("step", params, {})  # the label, not s.step
    step = f"coalesce(s.step, TRY_CAST({step_label} AS BIGINT))"
    rows = con.execute(
        f"""
        SELECT coalesce(n.model, '') AS model, coalesce(n.method, n.node_id) AS method,
               s.benchmark, {step} AS x, e.epoch, avg(s.value) AS y, n.fingerprint
        FROM nodes n JOIN scores s ON s.fingerprint = n.fingerprint
        LEFT JOIN (SELECT fingerprint, step, last(value) AS epoch FROM metrics
                   WHERE key = 'epoch' GROUP BY ALL) e
               ON e.fingerprint = n.fingerprint AND e.step = s.step
        WHERE {where} AND ({globs}) AND {step} IS NOT NULL
        GROUP BY ALL ORDER BY model, method, benchmark, x
        """,
        params.values,
    ).fetchall()
    if not rows:
        raise ResultsError(
            "no intermediate eval scores (scores with a step, or eval nodes with a `step` label) "
            "among the selected nodes"
        )
    by_epoch = all(r[4] is not None for r in rows)
    models = {r[0] for r in rows}
    # panel -> (label, method) -> node -> x -> scores (several benchmarks in the mean panel)
    series: dict[str, dict[tuple[str, str], dict[str, dict[float, list[float]]]]] = {}
    for model, method, bench, x, epoch, y, fp in rows:
        label = f"{model} {method}" if len(models) > 1 else method
        panel = series.setdefault("mean" if mean else bench, {})
        pts = panel.setdefault((label, method), {}).setdefault(fp, {})
        pts.setdefault(round(epoch, 6) if by_epoch else x, []).append(y)
    plt = _plt()
    panels = sorted(series)
    ncols = min(len(panels), 3)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for (label, method), nodes in sorted(series[panel].items()):
            per_seed = [{x: sum(v) / len(v) for x, v in pts.items()} for pts in nodes.values()]
            _band(ax, per_seed, label, method_colour(method))
        ax.set_title(f"mean of {', '.join(benchmarks)}" if mean else panel)
        ax.set_xlabel("epoch" if by_epoch else "step")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Eval score vs training progress")
    fig.tight_layout()
    return fig


def clipped_token_counts(con: duckdb.DuckDBPyConnection, fp: str) -> Counter[str]:
    """Token -> times clipped, summed over steps."""
    counts: Counter[str] = Counter()
    rows = con.execute("SELECT artifact_path FROM nodes WHERE fingerprint = ?", [fp]).fetchall()
    row = rows[0] if rows else None
    path = Path(row[0]) / CLIPPED_TOKENS_FILE if row and row[0] else None
    if path is not None and path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    _add_tokens(counts, json.loads(line).get(CLIPPED_TOKENS_KEY))
                except (ValueError, AttributeError):
                    continue
        return counts
    for (value,) in con.execute(
        "SELECT value FROM metric_values WHERE fingerprint = ? AND key = ?",
        [fp, CLIPPED_TOKENS_KEY],
    ).fetchall():
        _add_tokens(counts, json.loads(value))
    return counts


def _add_tokens(counts: Counter[str], tokens: Any) -> None:
    if isinstance(tokens, dict):
        tokens = list(tokens.items())
    for item in tokens or []:
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], int | float):
            counts[str(item[0])] += int(item[1])


def clipped_tokens(con: duckdb.DuckDBPyConnection, sel: Selection, top: int = 20) -> Figure:
    """Horizontal bars of the `top` most often clipped tokens, one panel per node (Fig. 8)."""
    nodes = [
        (fp, label, c) for fp, label in _nodes(con, sel) if (c := clipped_token_counts(con, fp))
    ]
    if not nodes:
        raise ResultsError(
            f"no selected node has {CLIPPED_TOKENS_FILE} or a {CLIPPED_TOKENS_KEY!r} metric "
            f"(PSFT stages record them)"
        )
    plt = _plt()
    fig, axes = plt.subplots(
        1, len(nodes), figsize=(5 * len(nodes), 0.28 * top + 1.5), squeeze=False
    )
    for ax, (_fp, label, counts) in zip(axes.flat, nodes, strict=True):
        common = counts.most_common(top)[::-1]
        ax.barh([repr(t)[1:-1] for t, _ in common], [c for _, c in common], color="tab:purple")
        ax.set_title(label)
        ax.set_xlabel("times clipped")
    fig.suptitle("Most often clipped tokens")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


__all__ = [
    "Selection",
    "clipped_tokens",
    "dpo_rewards",
    "eval_vs_step",
    "method_colour",
    "save",
    "training_dynamics",
]
