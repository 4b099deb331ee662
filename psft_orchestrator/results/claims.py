"""The paper's four claims, checked on the runs in the index.

1. PSFT matches SFT in-domain: PSFT - SFT on in-domain benchmarks (`*math*`). A
   non-inferiority test: supported when the whole CI lies above -MARGIN points,
   contradicted when it lies below -MARGIN.
2. PSFT keeps more out-of-domain skill: PSFT - SFT on `*ood*` benchmarks; supported when the
   CI lies above 0, contradicted when below.
3. PSFT's entropy stays up under prolonged training while SFT's collapses: the final token
   entropy of PSFT minus SFT (their `_prolong` variants when the index has them), over seeds
   (t CI of the per-seed differences); supported above 0, contradicted below.
4. PSFT is a better starting point: PSFT->GRPO - SFT->GRPO in-domain, and PSFT->DPO -
   SFT->DPO on every benchmark; supported above 0, contradicted below.

Claims 1, 2 and 4 use `compare.compare` (paired bootstrap over items and seeds). A claim whose
runs are not in the index is reported as not measured, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .compare import compare
from .stats import mean_ci
from .store import ResultsError

if TYPE_CHECKING:
    import duckdb

MARGIN = 2.0  # points: "matches" = PSFT is not worse than SFT by more than this
Verdict = Literal["supported", "contradicted", "inconclusive", "not measured"]


@dataclass
class Claim:
    number: str
    text: str
    measured: str  # what the difference is, e.g. "PSFT - SFT, *math* accuracy (points)"
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    verdict: Verdict = "not measured"
    note: str = ""


def verdict(low: float, high: float, threshold: float = 0.0) -> Verdict:
    """Supported if the CI lies above `threshold`, contradicted if below, else inconclusive."""
    if low > threshold:
        return "supported"
    if high < threshold:
        return "contradicted"
    return "inconclusive"


def check_claims(con: duckdb.DuckDBPyConnection, run: str | None = None) -> list[Claim]:
    return [
        _paired("1", "PSFT matches SFT in-domain", "PSFT", "SFT", "*math*", con, run, -MARGIN),
        _paired(
            "2", "PSFT keeps more out-of-domain skill than SFT", "PSFT", "SFT", "*ood*", con, run
        ),
        _entropy(con, run),
        _paired(
            "4a", "PSFT is a better start for GRPO", "PSFT->GRPO", "SFT->GRPO", "*math*", con, run
        ),
        _paired("4b", "PSFT is a better start for DPO", "PSFT->DPO", "SFT->DPO", "*", con, run),
    ]


def _paired(
    number: str,
    text: str,
    a: str,
    b: str,
    benchmark: str,
    con: duckdb.DuckDBPyConnection,
    run: str | None,
    threshold: float = 0.0,
) -> Claim:
    what = "all" if benchmark == "*" else benchmark
    claim = Claim(number, text, f"{a} - {b}, {what} benchmarks (points)")
    try:
        c = compare(con, a, b, benchmark, run)
    except ResultsError as e:  # e.g. the run has no such method: say so, without hints
        claim.note = str(e).split(" (did you mean")[0].split(" (valid:")[0]
        return claim
    r = c.result
    claim.diff, claim.low, claim.high = r.diff, r.low, r.high
    claim.verdict = verdict(r.low, r.high, threshold)
    claim.note = f"{r.n_items} items x {r.n_seeds} seeds, p = {r.p_value:.3g}"
    if threshold:
        claim.note += f"; margin {-threshold:g} points"
    return claim


def _entropy(con: duckdb.DuckDBPyConnection, run: str | None) -> Claim:
    claim = Claim("3", "PSFT's entropy stays up under prolonged training, SFT's collapses", "")
    methods = {m for (m,) in con.execute("SELECT DISTINCT method FROM nodes").fetchall()}
    a, b = (
        ("PSFT_prolong", "SFT_prolong")
        if {"PSFT_prolong", "SFT_prolong"} <= methods
        else ("PSFT", "SFT")
    )
    claim.measured = f"{a} - {b}, final token entropy (nats)"
    ent = {m: _entropy_by_seed(con, m, run) for m in (a, b)}
    seeds = sorted(set(ent[a]) & set(ent[b]))
    if not seeds:
        claim.note = (
            f"no training nodes of both {a} and {b} with a logged `entropy` and one seed in common"
        )
        return claim
    est = mean_ci([ent[a][s][1] - ent[b][s][1] for s in seeds])
    claim.diff = est.mean
    if est.ci is None:
        claim.note = "one seed: no CI"
        claim.verdict = "inconclusive"
        return claim
    claim.low, claim.high = est.low, est.high
    claim.verdict = verdict(est.low, est.high)
    change = "; ".join(
        f"{m} {_avg(ent[m], seeds, 0):.2f} -> {_avg(ent[m], seeds, 1):.2f}" for m in (a, b)
    )
    claim.note = f"{len(seeds)} seeds; first -> last entropy: {change}"
    return claim


def _avg(by_seed: dict[str, tuple[float, float]], seeds: list[str], i: int) -> float:
    return sum(by_seed[s][i] for s in seeds) / len(seeds)


def _entropy_by_seed(
    con: duckdb.DuckDBPyConnection, method: str, run: str | None
) -> dict[str, tuple[float, float]]:
    """{seed: (first, last) logged entropy} of the method's training nodes."""
    scope = ""
    params: list[str] = [method]
    if run is not None:
        scope = " AND n.fingerprint IN (SELECT fingerprint FROM run_nodes WHERE run_id = ?)"
        params.append(run)
    rows = con.execute(
        "SELECT coalesce(CAST(n.seed AS VARCHAR), '–'), arg_min(m.value, m.step), "
        "arg_max(m.value, m.step) FROM nodes n JOIN metrics m USING (fingerprint) "
        f"WHERE n.kind <> 'eval' AND n.method = ? AND m.key = 'entropy'{scope} "
        "GROUP BY n.fingerprint, n.seed",
        params,
    ).fetchall()
    return {seed: (first, last) for seed, first, last in rows}


def render_claims(claims: list[Claim]) -> str:
    from .render import text_table

    def num(x: float | None) -> str:
        return "–" if x is None else f"{x:+.2f}"

    body = [
        [
            c.number,
            c.text,
            c.measured,
            num(c.diff),
            "–" if c.low is None else f"[{num(c.low)}, {num(c.high)}]",
            c.verdict,
            c.note,
        ]
        for c in claims
    ]
    head = ["#", "claim", "measured", "diff", "95% CI", "verdict", "notes"]
    return text_table(head, body, right={3})
