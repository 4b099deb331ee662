"""compare and claims: bootstrap coverage on synthetic data with a known difference, paired
differences from per-sample records, and one hand-built workspace per claims verdict."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from synthetic_nodes import write_node, write_run_record, write_samples

from psft_orchestrator.cli.results import main
from psft_orchestrator.results.claims import MARGIN, verdict
from psft_orchestrator.results.ingest import reindex
from psft_orchestrator.results.stats import paired_bootstrap

SEEDS = (1, 2, 3)
ITEMS = 40


def test_bootstrap_covers_a_known_difference():
    """Seeds x items differences drawn around a true mean of 3 points: the 95% CI must
    contain 3 in about 95% of 300 independent data sets (binomial sd ~1.3%)."""
    rng = np.random.default_rng(123)
    true, hits, n_sets = 3.0, 0, 300
    for _ in range(n_sets):
        item_effect = rng.normal(0.0, 10.0, size=60)  # items differ a lot
        seed_effect = rng.normal(0.0, 0.5, size=(5, 1))  # seeds a little
        d = true + item_effect + seed_effect + rng.normal(0.0, 5.0, size=(5, 60))
        r = paired_bootstrap(d, n_boot=800, seed=int(rng.integers(1 << 30)))
        hits += r.low <= true <= r.high
    assert 0.89 <= hits / n_sets <= 0.99, hits / n_sets


def test_bootstrap_p_value_separates_effect_from_none():
    rng = np.random.default_rng(7)
    null = paired_bootstrap(rng.normal(0.0, 10.0, size=(3, 100)))
    effect = paired_bootstrap(rng.normal(6.0, 10.0, size=(3, 100)))
    assert null.p_value > 0.05 and effect.p_value < 0.01
    assert effect.low > 0


def verdicts(rate: float, rng: random.Random, k: int = 4) -> list[list[bool]]:
    return [[rng.random() < rate for _ in range(k)] for _ in range(ITEMS)]


def build(ws: Path, entropy_diffs: dict[int, float]) -> Path:
    """SFT and PSFT x 3 seeds: same in-domain accuracy, PSFT far worse out of domain;
    final entropy PSFT - SFT per seed as given."""
    rng = random.Random(0)
    nodes = []
    math_items = {s: verdicts(0.5, rng) for s in SEEDS}
    for method in ("SFT", "PSFT"):
        for seed in SEEDS:
            labels = {"method": method, "model": "toy", "seed": seed}
            final = 1.0 + (entropy_diffs[seed] if method == "PSFT" else 0.0)
            tfp, _ = write_node(
                ws,
                stage="train",
                kind=method.lower(),
                labels=labels,
                config={"lr": 1e-5, "seed": seed},
                metrics=[{"step": 1, "entropy": 1.5}, {"step": 2, "entropy": final}],
            )
            efp, edir = write_node(
                ws, stage="eval", kind="eval", labels=labels, parents=[(tfp, "train")], scores=[]
            )
            write_samples(edir, "toy_math", math_items[seed])
            ood = verdicts(0.9 if method == "SFT" else 0.3, rng, k=1)
            write_samples(edir, "toy_ood", [[v[0]] for v in ood], field="exact_match")
            nodes += [{"node_id": fp[:12], "stage": "x", "fingerprint": fp} for fp in (tfp, efp)]
    write_run_record(ws, "demo-00000000-20261122T131500", "demo", nodes)
    reindex(ws)
    return ws


def run_cli(capsys, ws: Path, *argv: str) -> tuple[int, str, str]:
    rc = main(["--workspace", str(ws), *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def item_means(ws: Path, method: str, bench: str, field: str) -> list[list[float]]:
    """Independently: per seed, per item mean verdict in percent, straight from the files."""
    out = []
    for seed in SEEDS:
        manifest = next(
            m
            for m in (json.loads(p.read_text()) for p in ws.glob("artifacts/eval/*/manifest.json"))
            if m["labels"] == {"method": method, "model": "toy", "seed": seed}
        )
        path = ws / "artifacts" / "eval" / manifest["fingerprint"][:16] / "outputs" / "samples"
        per: dict[int, list[float]] = {}
        for line in (path / f"{bench}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            per.setdefault(rec["index"], []).append(100.0 * rec[field])
        out.append([sum(v) / len(v) for _, v in sorted(per.items())])
    return out


def test_compare_paired_difference_and_unknown_method(tmp_path: Path, capsys):
    ws = build(tmp_path / "ws", {1: 0.1, 2: 0.1, 3: 0.1})
    rc, out, err = run_cli(
        capsys, ws, "compare", "PSFT", "SFT", "--benchmark", "*ood*", "--format", "json"
    )
    assert rc == 0, err
    got = json.loads(out)
    a = np.array(item_means(ws, "PSFT", "toy_ood", "exact_match"))
    b = np.array(item_means(ws, "SFT", "toy_ood", "exact_match"))
    assert got["diff"] == pytest.approx(float((a - b).mean()))
    assert got["n_seeds"] == 3 and got["n_items"] == ITEMS and got["benchmarks"] == ["toy_ood"]
    assert got["ci95"][0] <= got["diff"] <= got["ci95"][1] < 0 and got["p_value"] < 0.01
    rc, out, err = run_cli(capsys, ws, "compare", "PSTF", "SFT")
    assert rc == 2 and "no eval nodes of method 'PSTF'" in err and "did you mean 'PSFT'" in err


@pytest.mark.parametrize(
    ("low", "high", "threshold", "expected"),
    [
        (0.5, 2.0, 0.0, "supported"),
        (-3.0, -0.1, 0.0, "contradicted"),
        (-1.0, 1.0, 0.0, "inconclusive"),
        (-1.5, 4.0, -MARGIN, "supported"),
        (-6.0, -2.5, -MARGIN, "contradicted"),
    ],
)
def test_verdict_rule(low, high, threshold, expected):
    assert verdict(low, high, threshold) == expected


def test_claims_one_workspace_each_verdict(tmp_path: Path, capsys):
    ws = build(tmp_path / "ws", {1: 0.4, 2: -0.3, 3: 0.05})
    rc, out, err = run_cli(capsys, ws, "claims", "--run", "latest", "--format", "json")
    assert rc == 0, err
    claims = {c["number"]: c for c in json.loads(out)}
    assert claims["1"]["verdict"] == "supported"  # identical in-domain verdicts: diff 0
    assert claims["1"]["diff"] == pytest.approx(0.0)
    assert claims["2"]["verdict"] == "contradicted"  # PSFT 30% vs SFT 90% out of domain
    assert claims["2"]["high"] < 0
    assert claims["3"]["verdict"] == "inconclusive"  # entropy differences of both signs
    assert claims["3"]["diff"] == pytest.approx((0.4 - 0.3 + 0.05) / 3)
    assert claims["3"]["low"] < 0 < claims["3"]["high"]
    assert claims["4a"]["verdict"] == "not measured" and "PSFT->GRPO" in claims["4a"]["note"]
    rc, out, _ = run_cli(capsys, ws, "claims")
    assert rc == 0 and "contradicted" in out and "supported" in out


def test_claims_entropy_supported(tmp_path: Path, capsys):
    ws = build(tmp_path / "ws", {1: 0.5, 2: 0.6, 3: 0.55})
    rc, out, err = run_cli(capsys, ws, "claims", "--format", "json")
    assert rc == 0, err
    assert {c["number"]: c["verdict"] for c in json.loads(out)}["3"] == "supported"
