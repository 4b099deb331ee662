"""lm-evaluation-harness glue that needs no lm_eval import: task YAMLs for local benchmarks, and
lm-eval results -> ScoreRows. The harness itself is called in `backends/lmeval.py`.

A declared benchmark file (benchmark rows) is rewritten into `<tasks_dir>/<task>.jsonl` with flat
fields lm-eval's Jinja templates can use (`question`, `answer`, and for multiple choice `choices` and
`gold`), next to a task YAML. Rows with `choices` make a `multiple_choice` task (metric acc, with
acc_norm), others a `generate_until` task (metric exact_match, surrounding whitespace ignored).
A multi-turn prompt is reduced to its last user turn.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.evals.exact import gold_index
from psft_orchestrator.evals.records import prompt_text, read_benchmark

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
        data_file = (tasks_dir / f"{name}.jsonl").resolve()
        data_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        config = task_config(name, data_file, "choices" in rows[0], max_gen_toks)
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
