"""Seeds in tables: mean, 95% CI and n against an independent computation on hand-built index
rows; configurations that differ in more than the seed are never averaged together."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
from synthetic_nodes import write_node, write_run_record

from psft_orchestrator.cli.results import main
from psft_orchestrator.results.ingest import reindex

# Two-sided 95% t critical values, from a printed t table (not from scipy).
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824}
SCORES = {  # (method, lr) -> {seed: toy_math score}
    ("SFT", 1e-5): {1: 40.0, 2: 44.0, 3: 45.5},
    ("SFT", 1e-4): {1: 20.0, 2: 23.0},
    ("PSFT", 1e-6): {1: 41.0, 2: 43.0, 3: 48.0, 4: 44.0},
}
TABLE = """
title: seeds
rows: [model, method]
row_order: {method: [SFT, PSFT]}
columns:
  - {header: math, benchmark: toy_math, metric: "avg@*"}
  - {header: ood, benchmark: toy_ood, metric: "acc"}
avg: true
filter: {kind: eval}
"""


def ood_of(score: float) -> float:
    return 100.0 - score / 2


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    nodes = []
    for (method, lr), by_seed in SCORES.items():
        for seed, score in by_seed.items():
            labels = {"method": method, "model": "toy", "seed": seed}
            config = {"lr": lr, "seed": seed, "epochs": 2}
            tfp, _ = write_node(
                ws, stage="train", kind=method.lower(), labels=labels, config=config
            )
            scores = [
                {"suite": "math", "benchmark": "toy_math", "metric": "avg@4", "value": score},
                {"suite": "ood", "benchmark": "toy_ood", "metric": "acc", "value": ood_of(score)},
            ]
            efp, _ = write_node(
                ws,
                stage="eval",
                kind="eval",
                labels=labels,
                config={"seed": 0},
                parents=[(tfp, "train")],
                scores=scores,
            )
            nodes += [{"node_id": fp[:12], "stage": "x", "fingerprint": fp} for fp in (tfp, efp)]
    write_run_record(ws, "demo-00000000-20261122T131500", "demo", nodes)
    reindex(ws)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "seeds.yaml").write_text(TABLE)
    return ws


def table(ws: Path, capsys, *extra: str) -> str:
    tdir = ws.parent / "tables"
    rc = main(["--workspace", str(ws), "table", "seeds", "--tables-dir", str(tdir), *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def independent(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T_TABLE[n - 1] * sd / math.sqrt(n)


def test_mean_ci_n_per_configuration(ws: Path, capsys):
    rows = list(csv.DictReader(io.StringIO(table(ws, capsys, "--format", "csv"))))
    # SFT ran at two learning rates: two rows, told apart by a config column, never one mean.
    assert [(r["method"], r["config"]) for r in rows] == [
        ("SFT", "train.lr=0.0001"),
        ("SFT", "train.lr=1e-05"),
        ("PSFT", ""),
    ]
    for r in rows:
        lr = 1e-6 if r["method"] == "PSFT" else float(r["config"].split("=")[1])
        values = list(SCORES[(r["method"], lr)].values())
        assert r["n"] == str(len(values))
        mean, ci = independent(values)
        assert float(r["math"]) == pytest.approx(mean, abs=0.006)
        assert float(r["math ci95"]) == pytest.approx(ci, abs=0.01)
        ood_mean, ood_ci = independent([ood_of(v) for v in values])
        assert float(r["ood"]) == pytest.approx(ood_mean, abs=0.006)
        assert float(r["ood ci95"]) == pytest.approx(ood_ci, abs=0.01)
        avg_mean, avg_ci = independent([(v + ood_of(v)) / 2 for v in values])
        assert float(r["Avg."]) == pytest.approx(avg_mean, abs=0.006)
        assert float(r["Avg. ci95"]) == pytest.approx(avg_ci, abs=0.01)


def test_markdown_and_latex_show_mean_pm_ci(ws: Path, capsys):
    md = table(ws, capsys)
    psft = next(line for line in md.splitlines() if "| PSFT |" in line)
    mean, ci = independent(list(SCORES[("PSFT", 1e-6)].values()))
    assert f"| 4 | {mean:.2f} ± {ci:.2f} |" in psft
    tex = table(ws, capsys, "--format", "latex")
    assert f"${mean:.2f} \\pm {ci:.2f}$" in tex


def test_per_seed_rows(ws: Path, capsys):
    rows = list(csv.DictReader(io.StringIO(table(ws, capsys, "--format", "csv", "--per-seed"))))
    assert len(rows) == sum(len(v) for v in SCORES.values())
    for r in rows:
        lr = 1e-6 if r["method"] == "PSFT" else float(r["config"].split("=")[1])
        assert r["n"] == "1" and "math ci95" not in r
        assert float(r["math"]) == SCORES[(r["method"], lr)][int(r["seed"])]


def test_pivot_takes_run(ws: Path, capsys):
    argv = ["--workspace", str(ws), "pivot", "--rows", "method", "--cols", "benchmark"]
    assert main([*argv, "--run", "latest", "--format", "csv"]) == 0
    assert "toy_math" in capsys.readouterr().out
    assert main([*argv, "--run", "nope"]) == 2


def test_shared_node_shows_under_every_model_it_stood_for(tmp_path: Path, capsys):
    """A toy profile maps two paper models to one toy model: one eval node, listed in the run
    under both models' node ids, fills both models' rows; a label that is not a coordinate
    (method SFT->DPO on a node with coordinate method=SFT) is kept."""
    ws = tmp_path / "ws"
    score = [{"suite": "math", "benchmark": "toy_math", "metric": "avg@4", "value": 30.0}]
    shared, dpo = (
        write_node(
            ws,
            stage=stage,
            kind="eval",
            node_id=f"{stage}[model=Qwen,method=SFT]",
            labels={"model": "Qwen", "method": method},
            scores=score,
        )[0]
        for stage, method in (("eval", "SFT"), ("eval_dpo", "SFT->DPO"))
    )
    nodes = [
        {"node_id": f"{stage}[model={model},method=SFT]", "stage": stage, "fingerprint": fp}
        for model in ("Qwen", "Llama")
        for stage, fp in (("eval", shared), ("eval_dpo", dpo))
    ]
    write_run_record(ws, "demo-00000000-20261122T131500", "demo", nodes)
    reindex(ws)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "seeds.yaml").write_text(TABLE)
    for extra in ([], ["--run", "latest"]):
        rows = list(csv.DictReader(io.StringIO(table(ws, capsys, "--format", "csv", *extra))))
        assert sorted((r["model"], r["method"], r["math"]) for r in rows) == [
            ("Llama", "SFT", "30.00"),
            ("Llama", "SFT->DPO", "30.00"),
            ("Qwen", "SFT", "30.00"),
            ("Qwen", "SFT->DPO", "30.00"),
        ]
