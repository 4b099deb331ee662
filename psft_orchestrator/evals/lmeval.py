"""Everything about lm-evaluation-harness 0.4.13, in one place: task YAMLs for local benchmarks,
running the harness on one suite (`evaluate_with_lmeval`), and lm-eval results -> ScoreRows.
`backends/lmeval.py` is only the backend's entry point; the native eval backend (`evals.run`)
calls `evaluate_with_lmeval` for lmeval suites too.

`evaluate_with_lmeval` imports lm_eval (and torch, datasets) when called, never at import: never
call it from the orchestrator's process (with vLLM and data_parallel_size > 1 lm_eval starts and
stops Ray itself, shared/reference/backends.md). Registry tasks (`suite.tasks`) need their
datasets in the local HF cache, since runs are offline.

A declared benchmark file (benchmark rows) is rewritten into `<tasks_dir>/<task>.jsonl` with flat
fields lm-eval's Jinja templates can use (`question`, `answer`, and for multiple choice `choices` and
`gold`), next to a task YAML. Rows with `choices` make a `multiple_choice` task (metric acc, with
acc_norm), others a `generate_until` task (metric exact_match, surrounding whitespace ignored).
A multi-turn prompt is reduced to its last user turn.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from psft_orchestrator.configs.evals import LMEvalSuite
from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.evals.exact import gold_index
from psft_orchestrator.evals.records import SampleWriter, prompt_text, read_benchmark

TASK_PREFIX = "psft_"
STOP_STRINGS = ["<|im_end|>", "<|endoftext|>"]


def task_name(benchmark: str) -> str:
    return TASK_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", benchmark)


def _flat_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"question": prompt_text(row["prompt"]), "answer": str(row["answer"])}
    if row.get("choices"):
        out["choices"] = [str(c) for c in row["choices"]]
        out["gold"] = gold_index(row["answer"], out["choices"])
    return out


def task_config(
    name: str, data_file: Path, multiple_choice: bool, max_gen_toks: int
) -> dict[str, Any]:
    """One lm-eval task definition over a local JSONL of flat rows."""
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "doc_to_text": "{{question}}",
        "metadata": {"version": 1.0},
    }
    if multiple_choice:
        config.update(
            output_type="multiple_choice",
            doc_to_choice="{{choices}}",
            doc_to_target="{{gold}}",
            metric_list=[
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        )
    else:
        config.update(
            output_type="generate_until",
            doc_to_target="{{answer}}",
            generation_kwargs={
                "until": STOP_STRINGS,
                "do_sample": False,
                "max_gen_toks": max_gen_toks,
            },
            metric_list=[
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": False,
                    "ignore_punctuation": False,
                    "regexes_to_ignore": [r"^\s+", r"\s+$", r"\.$"],
                }
            ],
        )
    return config


def write_task_yamls(
    benchmarks: dict[str, str | Path],
    tasks_dir: str | Path,
    max_gen_toks: int = 256,
    limit: int | None = None,
) -> dict[str, str]:
    """Write a data file and task YAML per benchmark into `tasks_dir`; return {task name: benchmark}."""
    tasks_dir = Path(tasks_dir)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for benchmark, path in benchmarks.items():
        name = task_name(benchmark)
        rows = [_flat_row(r) for r in read_benchmark(path, limit)]
        if not rows:
            raise ValueError(f"benchmark {benchmark!r} ({path}) has no rows")
        kinds = {"choices" in r for r in rows}
        if len(kinds) > 1:  # lm-eval gives a task one output type
            raise ValueError(
                f"benchmark {benchmark!r} ({path}) mixes multiple-choice rows (with `choices`) and "
                "free-answer rows; lm-eval runs one output type per task: split it into two "
                "benchmarks"
            )
        data_file = (tasks_dir / f"{name}.jsonl").resolve()
        data_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        config = task_config(name, data_file, kinds == {True}, max_gen_toks)
        (tasks_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        names[name] = benchmark
    return names


def scores_from_results(
    results: dict[str, Any], suite: str, task_to_benchmark: dict[str, str], step: int | None = None
) -> list[ScoreRow]:
    """ScoreRows from `simple_evaluate`'s output: one per task and metric (filter "none" is dropped
    from the metric name, others kept as "metric,filter"); values in percent."""
    rows: list[ScoreRow] = []
    n_samples = results.get("n-samples", {})
    for task, metrics in results["results"].items():
        n = int(n_samples.get(task, {}).get("effective", 0))
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                ScoreRow(
                    suite=suite,
                    benchmark=task_to_benchmark.get(task, task),
                    metric=metric if filt == "none" else f"{metric},{filt}",
                    value=100.0 * float(value),
                    n=n,
                    stderr=100.0 * float(stderr) if isinstance(stderr, int | float) else None,
                    step=step,
                )
            )
    return rows


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
