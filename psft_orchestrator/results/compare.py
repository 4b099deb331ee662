"""`psft-results compare A B`: is A better than B, by how much, and how sure are we?

A and B are methods (the `method` label of eval nodes) or single eval nodes (node id or
fingerprint prefix). The comparison is paired: for each seed both sides ran, and each
benchmark item both sides answered, d = score_A - score_B, where an item's score is the
mean verdict of its samples (in percent) read from the per-sample records the evals write
(`outputs/samples/<benchmark>.jsonl`). The estimate is the mean of d; `stats.paired_bootstrap`
gives its 95% CI and p-value.

A method's eval nodes must be replicates of one configuration (`configs.Signatures`);
otherwise the message says which fields differ and how to pick (--run).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .configs import Signatures, describe, differing
from .stats import Difference, paired_bootstrap
from .store import ResultsError, UsageError

if TYPE_CHECKING:
    import duckdb

# Which field of a sample record is its verdict, by preference, and how to map it to [0, 1].
VERDICT_FIELDS: tuple[tuple[str, float], ...] = (
    ("correct", 1.0),
    ("exact_match", 1.0),
    ("strict", 1.0),
    ("loose", 1.0),
    ("rating", 0.1),
)
SAMPLES_DIR = Path("outputs") / "samples"


@dataclass
class Side:
    """One side of a comparison: its name and its eval nodes, by seed."""

    name: str
    nodes: dict[str, list[str]]  # seed ("–" = none) -> artifact paths of eval nodes

    def describe(self) -> str:
        seeds = ", ".join(s for s in self.nodes if s != "–") or "none"
        return f"{self.name} ({sum(map(len, self.nodes.values()))} eval nodes; seeds {seeds})"


@dataclass
class Comparison:
    a: Side
    b: Side
    benchmarks: list[str]
    result: Difference
    mean_a: float
    mean_b: float

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "a": self.a.name,
            "b": self.b.name,
            "benchmarks": self.benchmarks,
            "diff": r.diff,
            "ci95": [r.low, r.high],
            "p_value": r.p_value,
            "n_seeds": r.n_seeds,
            "n_items": r.n_items,
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
        }

    def text(self) -> str:
        r = self.result
        return (
            f"A = {self.a.describe()}\nB = {self.b.describe()}\n"
            f"benchmarks: {', '.join(self.benchmarks)}\n"
            f"A - B = {r.diff:+.2f} points, 95% CI [{r.low:+.2f}, {r.high:+.2f}], p = {r.p_value:.3g}"
            f"  (paired over {r.n_items} items x {r.n_seeds} seeds; mean A {self.mean_a:.2f}, "
            f"mean B {self.mean_b:.2f})\n"
        )


def resolve_side(con: duckdb.DuckDBPyConnection, name: str, run: str | None = None) -> Side:
    """A method label or one eval node -> its eval nodes by seed (one configuration only)."""
    scope, params = "n.kind = 'eval'", [name]
    if run is not None:
        scope += " AND n.fingerprint IN (SELECT fingerprint FROM run_nodes WHERE run_id = ?)"
    rows = con.execute(
        f"SELECT n.fingerprint, n.seed, n.artifact_path FROM nodes n WHERE {scope} AND "
        f"n.method = ? ORDER BY n.seed, n.fingerprint",
        [*([run] if run else []), *params],
    ).fetchall()
    if not rows:
        rows = con.execute(
            "SELECT fingerprint, seed, artifact_path FROM nodes WHERE kind = 'eval' AND "
            "(node_id = ? OR (length(?) >= 6 AND starts_with(fingerprint, lower(?))))",
            [name, name, name],
        ).fetchall()
        if len(rows) > 1:
            raise UsageError(f"{name!r} matches {len(rows)} eval nodes; give a longer prefix")
    if not rows:
        raise UsageError(_unknown(con, name, run))
    _check_one_config(con, name, [r[0] for r in rows])
    nodes: dict[str, list[str]] = {}
    for _, seed, path in rows:
        nodes.setdefault("–" if seed is None else str(seed), []).append(path)
    return Side(name, nodes)


def _unknown(con: duckdb.DuckDBPyConnection, name: str, run: str | None) -> str:
    from psft_orchestrator.spec.errors import did_you_mean

    known = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT method FROM nodes WHERE kind = 'eval' AND method IS NOT NULL"
        ).fetchall()
    ]
    where = f" in run {run}" if run else " in the index"
    return (
        f"no eval nodes of method {name!r}{where}, and no eval node with that id or "
        f"fingerprint{did_you_mean(name, known)}"
    )


def _check_one_config(con: duckdb.DuckDBPyConnection, name: str, fps: list[str]) -> None:
    sigs = Signatures(con)
    groups = {sigs.key(fp): fp for fp in fps}
    if len(groups) > 1:
        fields = differing([sigs(fp) for fp in groups.values()])
        shown = "; ".join(describe(sigs(fp), fields) for fp in groups.values())
        raise UsageError(
            f"{name!r} has eval nodes of {len(groups)} configurations that differ in more than "
            f"the seed ({shown}); pick one with --run RUN"
        )


def item_scores(node_dir: str | Path, benchmark: str = "*") -> dict[tuple[str, int], float]:
    """{(benchmark, item index): mean verdict of the item's final samples, in percent}."""
    samples = Path(node_dir) / SAMPLES_DIR
    out: dict[tuple[str, int], float] = {}
    for path in sorted(samples.glob("*.jsonl")):
        if not fnmatch.fnmatchcase(path.stem.lower(), benchmark.lower()):
            continue
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        steps = [r.get("step") for r in records]
        final = None if None in steps else max(steps, default=None)
        per_item: dict[int, list[float]] = {}
        for rec in records:
            if rec.get("step") == final:
                value = _verdict(rec)
                if value is not None:
                    per_item.setdefault(int(rec["index"]), []).append(value)
        for index, values in per_item.items():
            out[(path.stem, index)] = 100.0 * sum(values) / len(values)
    return out


def _verdict(rec: dict[str, Any]) -> float | None:
    for key, scale in VERDICT_FIELDS:
        value = rec.get(key)
        if isinstance(value, bool | int | float) and value == value:
            return float(value) * scale
    return None


def compare(
    con: duckdb.DuckDBPyConnection,
    a: str,
    b: str,
    benchmark: str = "*",
    run: str | None = None,
    n_boot: int = 2000,
) -> Comparison:
    """Paired difference A - B over the seeds and benchmark items both sides have."""
    side_a, side_b = resolve_side(con, a, run), resolve_side(con, b, run)
    pairs = _pair_seeds(side_a, side_b)
    scores = [
        (_seed_scores(side_a, sa, benchmark), _seed_scores(side_b, sb, benchmark))
        for sa, sb in pairs
    ]
    items = set.intersection(*(set(x) & set(y) for x, y in scores))
    if not items:
        raise ResultsError(
            f"{a!r} and {b!r} have no benchmark items in common matching {benchmark!r} "
            f"(per-sample records under {SAMPLES_DIR}/ of their eval nodes)"
        )
    keys = sorted(items)
    diffs = [[x[k] - y[k] for k in keys] for x, y in scores]
    mean_a = sum(x[k] for x, _ in scores for k in keys) / (len(scores) * len(keys))
    mean_b = sum(y[k] for _, y in scores for k in keys) / (len(scores) * len(keys))
    benches = sorted({k[0] for k in keys})
    return Comparison(side_a, side_b, benches, paired_bootstrap(diffs, n_boot), mean_a, mean_b)


def _pair_seeds(a: Side, b: Side) -> list[tuple[str, str]]:
    """Seeds both ran; a side with one unseeded node (e.g. the base model) pairs with every seed."""
    if list(a.nodes) == ["–"]:
        return [("–", s) for s in b.nodes]
    if list(b.nodes) == ["–"]:
        return [(s, "–") for s in a.nodes]
    common = [s for s in a.nodes if s in b.nodes]
    if not common:
        raise ResultsError(
            f"{a.describe()} and {b.describe()} share no seed, so they cannot be paired"
        )
    return [(s, s) for s in common]


def _seed_scores(side: Side, seed: str, benchmark: str) -> dict[tuple[str, int], float]:
    """Item scores of a side's nodes of one seed (several nodes of one seed: their mean)."""
    per_node = [item_scores(p, benchmark) for p in side.nodes[seed]]
    keys = set.intersection(*(set(s) for s in per_node))
    return {k: sum(s[k] for s in per_node) / len(per_node) for k in keys}
