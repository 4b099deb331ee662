"""Entry points of evaluation: `run_eval(job)` for an eval node, `evaluate_model(...)` in-process.

An eval node's job has `inputs["model"]` (an HF directory) and `inputs["benchmarks"]` (a list of
InputRef, `.name` = declared benchmark name, `.path` = its rows); `job.config` is an `EvalConfig`.
It writes:
    outputs/scores.json              list of ScoreRow dicts (every suite, benchmark and metric)
    outputs/samples/<benchmark>.jsonl one record per judged completion (prompt, completion, verdict)
    metrics.jsonl                    one row (step 0): "<suite>/<benchmark>/<metric>" -> value
    summary.json                     the same numbers, for the terminal summary
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from psft_orchestrator.configs.evals import EvalConfig, Suite
from psft_orchestrator.contract import InputRef, Job, MetricsWriter, ScoreRow, config_for
from psft_orchestrator.evals.records import SampleWriter


def _benchmarks(job: Job) -> dict[str, str]:
    refs = job.inputs.get("benchmarks", [])
    refs = [refs] if isinstance(refs, InputRef) else refs
    return {ref.name: ref.path for ref in refs}


def _check_declared(suites: list[Any], benchmarks: dict[str, Any]) -> None:
    wanted = {b for s in suites for b in s.benchmarks} | {
        s.reference for s in suites if getattr(s, "reference", None)
    }
    missing = sorted(wanted - benchmarks.keys())
    if missing:
        raise ValueError(
            f"eval: benchmarks {missing} are used by a suite but not among the inputs {sorted(benchmarks)}"
        )


def evaluate_model(
    model: Any,
    tokenizer: Any,
    suites: list[Suite] | list[dict[str, Any]],
    benchmarks: dict[str, str | Path],
    step: int | None = None,
    samples_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    judge_models: dict[str, str] | None = None,
) -> list[ScoreRow]:
    """Run `suites` on an in-memory model (a trainer calls this between steps; eval mode is set and
    restored). lmeval suites need `work_dir` for their generated task files. Judged suites that
    serve the same judge share one `vllm serve` for the call (judge.ServedJudges)."""
    from psft_orchestrator.evals.judge import ServedJudges

    parsed = EvalConfig.model_validate({"suites": suites}).suites
    _check_declared(parsed, benchmarks)
    samples = SampleWriter(samples_dir)
    backend = getattr(model, "backend_name", "native")  # a vLLM generator names itself
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    scores: list[ScoreRow] = []
    work = Path(work_dir) if work_dir else None
    try:
        with ServedJudges(judge_models or {}, work) as servers:
            for suite in parsed:
                rows = _run_suite(
                    model, tokenizer, suite, benchmarks, step, samples, work, servers, backend
                )
                scores += with_protocol(
                    rows, suite, "lmeval" if suite.type == "lmeval" else backend
                )
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return scores


def _run_suite(model, tokenizer, suite, benchmarks, step, samples, work_dir, servers, backend):
    """One suite's score rows, by its type (`backend`: what generated, for judged protocols)."""
    from psft_orchestrator.evals.judge import run_judge_suite
    from psft_orchestrator.evals.math import run_math_suite
    from psft_orchestrator.evals.rules import run_rules_suite

    if suite.type == "lmeval":
        from psft_orchestrator.evals.lmeval import evaluate_with_lmeval

        if work_dir is None:
            raise ValueError("an lmeval suite needs a work_dir for its task files")
        return evaluate_with_lmeval(model, suite, benchmarks, work_dir, tokenizer, step, samples)
    if suite.type == "judge":
        return run_judge_suite(
            model, tokenizer, suite, benchmarks, step, samples,
            servers.judge_models, work_dir, backend, servers,
        )  # fmt: skip
    runners = {"math": run_math_suite, "rules": run_rules_suite}
    return runners[suite.type](model, tokenizer, suite, benchmarks, step, samples)


def with_protocol(rows: list[ScoreRow], suite: Any, backend: str) -> list[ScoreRow]:
    """Rows without a protocol get their suite's (judged suites set a richer one themselves)."""
    from psft_orchestrator.evals.protocol import suite_protocol

    proto = suite_protocol(suite, backend)
    return [r if r.protocol else r.model_copy(update={"protocol": proto}) for r in rows]


def _judge_models(job: Job) -> dict[str, str]:
    """Declared models that judges serve (`judge: {serve: NAME}`), resolved by the planner."""
    refs = job.inputs.get("judges", [])
    refs = [refs] if isinstance(refs, InputRef) else refs
    return {ref.name: ref.path for ref in refs}


def run_eval(job: Job, load: Any = None) -> dict[str, Any]:
    """Backend entry point of the eval stage. `load(model_dir) -> (generator, tokenizer)`
    swaps the generation engine (backends/vllm.py); default: the HF model in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cfg = config_for(job, EvalConfig)
    benchmarks = _benchmarks(job)
    _check_declared(cfg.suites, benchmarks)
    model_dir = job.input("model").path
    samples_dir = job.out / "outputs" / "samples"
    shutil.rmtree(samples_dir, ignore_errors=True)  # a retried attempt must not append twice
    samples = SampleWriter(samples_dir)

    scores: list[ScoreRow] = []
    native = [s for s in cfg.suites if s.type != "lmeval"]
    if native:
        from psft_orchestrator.evals.generate import load_model

        model, tokenizer = (load or load_model)(model_dir)
        scores += evaluate_model(
            model,
            tokenizer,
            native,
            benchmarks,
            samples_dir=samples_dir,
            work_dir=job.out / "work",
            judge_models=_judge_models(job),
        )
        del model
    for suite in (s for s in cfg.suites if s.type == "lmeval"):
        from psft_orchestrator.evals.lmeval import evaluate_with_lmeval

        rows = evaluate_with_lmeval(model_dir, suite, benchmarks, job.out / "work", samples=samples)
        scores += with_protocol(rows, suite, "lmeval")

    out = job.output_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps([s.model_dump() for s in scores], indent=2))
    os.replace(tmp, out)
    summary = {f"{s.suite}/{s.benchmark}/{s.metric}": round(s.value, 4) for s in scores}
    with MetricsWriter(job.out / "metrics.jsonl") as metrics:
        metrics.log(0, **summary)
    (job.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
