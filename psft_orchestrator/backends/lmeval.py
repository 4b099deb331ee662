"""The lm-eval backend: lm-evaluation-harness 0.4.13 inside the backend's subprocess.

`evaluate_with_lmeval` runs one `LMEvalSuite`: registry tasks by name (`suite.tasks`, needing
their datasets in the local HF cache, since runs are offline) and declared local benchmarks as
generated task YAMLs (`evals.lmeval`). `run(job)` is the backend entry point of an eval node whose
suites are all `lmeval`; the native eval backend (`evals.run`) also routes lmeval suites here.

Never call this from the orchestrator's process: lm_eval imports torch and datasets, and with
vLLM and data_parallel_size > 1 it starts and stops Ray itself (shared/reference/backends.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from psft_orchestrator.contract import Job, ScoreRow, config_for
from psft_orchestrator.evals.config import EvalConfig, LMEvalSuite
from psft_orchestrator.evals.lmeval import scores_from_results, write_task_yamls
from psft_orchestrator.evals.records import SampleWriter

BACKEND_VERSION = "lmeval-1"


def _model_args(model_dir: str, suite: LMEvalSuite) -> str:
    args = f"pretrained={model_dir},dtype={suite.dtype}"
    if suite.backend == "vllm":
        args += ",gpu_memory_utilization=0.85"
    return args


def evaluate_with_lmeval(
    model: str | Path | Any,
    suite: LMEvalSuite,
    benchmarks: dict[str, str | Path],
    work_dir: str | Path,
    tokenizer: Any = None,
    step: int | None = None,
    samples: SampleWriter | None = None,
) -> list[ScoreRow]:
    """Run one lmeval suite. `model` is an HF directory, or (hf backend only) an in-memory model
    with its `tokenizer`, so a trainer can call it between steps."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    local = {name: benchmarks[name] for name in suite.benchmarks}
    task_to_benchmark = write_task_yamls(local, Path(work_dir) / "lmeval_tasks", suite.max_gen_toks)
    task_manager = TaskManager(
        include_path=str(Path(work_dir) / "lmeval_tasks") if local else None,
        include_defaults=bool(suite.tasks),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(model, str | Path):
        lm: Any = suite.backend
        model_args: str | None = _model_args(str(model), suite)
    else:
        if suite.backend != "hf":
            raise ValueError("an in-memory model can only be evaluated with the hf lm-eval backend")
        from lm_eval.models.huggingface import HFLM

        lm, model_args = (
            HFLM(pretrained=model, tokenizer=tokenizer, batch_size=suite.batch_size, device=device),
            None,
        )
    results = simple_evaluate(
        model=lm,
        model_args=model_args,
        tasks=[*suite.tasks, *task_to_benchmark],
        num_fewshot=suite.num_fewshot,
        batch_size=suite.batch_size,
        device=device,
        limit=suite.limit,
        bootstrap_iters=0,
        task_manager=task_manager,
        system_instruction=suite.system_prompt,
        apply_chat_template=suite.apply_chat_template,
        log_samples=True,
    )
    if results is None:  # non-zero rank of a distributed run
        return []
    if samples is not None:
        for task, docs in results.get("samples", {}).items():
            samples.write(
                task_to_benchmark.get(task, task),
                [_sample_record(suite.label, d, step) for d in docs],
            )
    return scores_from_results(results, suite.label, task_to_benchmark, step)


def _sample_record(suite: str, doc: dict[str, Any], step: int | None) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "suite": suite,
                "index": doc.get("doc_id"),
                "step": step,
                "prompt": doc.get("doc", {}).get("question", doc.get("doc")),
                "completion": doc.get("filtered_resps"),
                "reference": doc.get("target"),
                **{m: doc.get(m) for m in doc.get("metrics", [])},
            },
            default=str,
        )
    )


def run(job: Job) -> dict[str, Any]:
    """Backend entry point: an eval node whose suites are all lmeval suites."""
    cfg = config_for(job, EvalConfig)
    other = [s.type for s in cfg.suites if s.type != "lmeval"]
    if other:
        raise ValueError(
            f"the lmeval backend runs only lmeval suites; got {other} (use the native backend)"
        )
    from psft_orchestrator.evals.run import run_eval

    return run_eval(job)
