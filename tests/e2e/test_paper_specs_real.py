"""Every paper spec's toy profile, run for real with the backends the profile selects: native
training, pretraining, filtering and generation; LLaMA-Factory DPO; lm-eval suites; vLLM eval
nodes in their own environment, judged by a `vllm serve` judge. No fake backend.

In CI (`make test`) the four runs are reduced through the spec language only (`--set`), to fit
the suite's budget: fewer pretraining and training steps, smaller toy data sets and benchmarks,
k = 1, short completions; in specs/ablations.yaml one clip value of three and upd.4 beside "no
update" (of four update frequencies), every method kept; in specs/alignment_dpo.yaml one method
(PSFT) of three, so two vLLM eval nodes run, not six (tests/evals/test_vllm_backend.py covers
the backend itself). The four runs share one workspace: their common nodes (pretraining, the
filter) run once. So do the four full-size runs.

`make test-paper-full` (marker `paper_full`, deselected by default) runs the four toy profiles
at full size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
KEYS = {"model", "method", "n", "clip_high", "mini_batch_size", "old_policy"}  # row labels


def _bench(names: list[str], n: int) -> list[str]:
    return [f"datasets.{b}.n={n}" for b in names]


MATH_BENCH = ["AIME24", "AIME25", "AMC", "MATH-500", "OlympiadBench", "Minerva"]
OOD_BENCH = ["GPQA", "ARC-C", "TruthfulQA", "MMLU-Pro", "SuperGPQA", "HeadQA", "IFEval_loose"]
# Every spec's toy profile pretrains the same tiny model on the same corpus: shrunk alike, the
# four runs share that node.
PRETRAIN = ["datasets.corpus.n=600", "pretrain.max_steps=30", "pretrain.max_length=128"]
FILTER = ["datasets.openr1_math.n=128"]  # ~100 chains after the filter: a PSFT batch (64) fits


@dataclass(frozen=True)
class Paper:
    """A paper spec: the table rows its toy profile must fill, and the CI reduction."""

    rows: list[str]
    reduce: list[str] = field(default_factory=list)
    reduced_rows: list[str] | None = None  # rows of the reduced run, when it drops a method
    # Table columns of benchmarks that the spec does not evaluate (and so the Avg.): empty.
    empty_columns: frozenset[str] = frozenset()

    def rows_for(self, full: bool) -> list[str]:
        return self.rows if full or self.reduced_rows is None else self.reduced_rows


PAPERS = {
    "math_psft": Paper(
        ["Original", "SFT", "SFT_KL", "PSFT", "PSFT_warmup"],
        [
            *PRETRAIN,
            *FILTER,
            "train.max_steps=3",  # PSFT_warmup's 2 warm-up steps, then one PSFT step
            "vars.math_k=1",
            "vars.aime_k=1",
            "vars.max_new_tokens=16",
            *_bench(MATH_BENCH + OOD_BENCH, 4),
        ],
    ),
    "math_grpo": Paper(
        ["Original", "SFT", "PSFT", "GRPO", "SFT->GRPO", "PSFT->GRPO"],
        [
            *PRETRAIN,
            *FILTER,
            "sft.max_steps=2",
            "datasets.dapo_math.n=32",
            "grpo.total_steps=1",
            "grpo_original.total_steps=1",
            "vars.k=1",
            "vars.max_new_tokens=16",
            *_bench(MATH_BENCH + OOD_BENCH, 4),
        ],
    ),
    "ablations": Paper(
        ["PSFT", "DFT", "iwSFT", "iwSFT_token"],
        [
            *PRETRAIN,
            *FILTER,
            "clip.matrix.clip_high=[0.2]",  # one clip value of three
            "update_freq.matrix.mini_batch_size=[16]",  # and upd.4 beside "no update"
            "clip.max_steps=2",
            "update_freq.max_steps=2",
            "baselines.max_steps=2",
            "vars.k=1",
            *_bench(["AIME24", "MATH-500", "Minerva"], 4),
        ],
        empty_columns=frozenset({"AIME25", "AMC", "OlympiadBench", "Avg."}),
    ),
    "alignment_dpo": Paper(
        ["SFT", "PSFT", "PSFT_prolong", "SFT->DPO", "PSFT->DPO", "PSFT_prolong->DPO"],
        [
            *PRETRAIN,
            "sft.matrix.method=[PSFT]",  # two vLLM eval nodes (before and after DPO), not six
            "datasets.ultrachat.n=96",
            "sft.max_steps=2",
            "datasets.ultrafeedback.n=32",
            "dpo.max_steps=2",
            "vars.answer_tokens=16",
            *_bench(["AlpacaEval2", "AlpacaEval2_ref"], 6),  # the LC fit needs 5 rows or more
            *_bench(["ArenaHard", "ArenaHard_baseline", "MTBench"], 4),
            *_bench(["gsm8k_cot", "truthfulqa_mc1"], 4),
        ],
        reduced_rows=["PSFT", "PSFT->DPO"],
    ),
}


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
    env.pop("PSFT_FAKE_BACKEND", None)
    return env


def _cli(module: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


def _run_paper(name: str, ws: Path, full: bool) -> None:
    paper = PAPERS[name]
    sets = [] if full else [a for s in paper.reduce for a in ("--set", s)]
    spec = str(REPO / "specs" / f"{name}.yaml")
    args = [spec, "--profile", "toy", "--workspace", str(ws), "--no-prefect", *sets]
    run = _cli("psft_orchestrator.cli.run", *args, timeout=3600 if full else 1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = run.stdout.split("run summary")[1].splitlines()[0]
    assert " failed" not in summary and "upstream_failed" not in summary, summary
    _check_tables(name, ws, paper.rows_for(full))
    evals = _check_scores(ws, run.stdout)
    if name == "alignment_dpo":
        _check_vllm(evals)


def _check_tables(name: str, ws: Path, rows: list[str]) -> None:
    """Each table of the spec has the expected method rows, and every cell of every row is a
    finite number, except the columns of benchmarks the spec does not evaluate."""
    from psft_orchestrator.spec.yamlsrc import load_yaml

    tables = load_yaml(REPO / "specs" / f"{name}.yaml").data.get("tables") or []
    empty = PAPERS[name].empty_columns
    seen: set[str] = set()
    for table in tables:
        args = ["--workspace", str(ws), "table", table, "--run", "latest", "--format", "json"]
        out = _cli("psft_orchestrator.cli.results", *args, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        grid = json.loads(out.stdout)
        for row in grid["rows"]:
            seen.add(row["method"])
            cells = {h: v for h, v in row.items() if h in grid["columns"] and h not in KEYS}
            filled = {h: v for h, v in cells.items() if h not in empty}
            assert filled and all(_number(v) for v in filled.values()), (table, row)
            assert all(cells[h] is None for h in empty if h in cells), (table, row)
    assert set(rows) <= seen, f"rows missing from {tables}: {sorted(set(rows) - seen)}"


def _number(v: object) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _check_scores(ws: Path, stdout: str) -> list[Path]:
    """Every node of the run succeeded (or was cached), every eval node wrote scores, and every
    score is a finite number."""
    run_id = stdout.split("run ", 1)[1].split(";", 1)[0].strip()
    record = json.loads((ws / "runs" / f"{run_id}.json").read_text())
    assert {n["status"] for n in record["nodes"]} <= {"success", "cached"}, record["nodes"]
    dirs = [ws / "artifacts" / n["stage"] / n["fingerprint"][:16] for n in record["nodes"]]
    evals = [d for d in dirs if json.loads((d / "manifest.json").read_text())["kind"] == "eval"]
    assert evals, record["nodes"]
    for node in evals:
        scores = json.loads((node / "outputs" / "scores.json").read_text())
        assert scores and all(_number(s["value"]) for s in scores), (node, scores)
    return evals


def _check_vllm(evals: list[Path]) -> None:
    """The judged eval nodes generated with vLLM and were graded by a `vllm serve` judge that
    started once per node, shared by its three judged suites."""
    judged = [d for d in evals if d.parent.name in ("eval_sft", "eval_dpo")]
    assert judged, evals
    for node in judged:
        scores = json.loads((node / "outputs" / "scores.json").read_text())
        protocols = [s["protocol"] for s in scores]
        assert {p["backend"] for p in protocols} == {"vllm"}, protocols
        assert {p["judge"]["kind"] for p in protocols} == {"vllm-serve"}, protocols
        log = (node / "logs" / "stage.log").read_text()
        assert log.count("[judge] starting") == 1, log[-3000:]


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paper") / "ws"


@pytest.fixture(scope="module")
def full_ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paper_full") / "ws"


@pytest.mark.parametrize("name", ["math_psft", "math_grpo", "ablations", "alignment_dpo"])
def test_paper_spec_toy_profile_runs_for_real_reduced(name: str, shared_ws: Path):
    _run_paper(name, shared_ws, full=False)


@pytest.mark.paper_full
@pytest.mark.parametrize("name", ["math_psft", "math_grpo", "ablations", "alignment_dpo"])
def test_paper_spec_toy_profile_runs_for_real_full(name: str, full_ws: Path):
    _run_paper(name, full_ws, full=True)
