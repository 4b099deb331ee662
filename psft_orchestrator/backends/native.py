"""The `native` backend: our own PyTorch code for every stage kind (the embedded default).

render → launch → collect is trivial here: the job already holds the resolved config, the
code runs in this process (the worker subprocess), and it writes the node's files itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psft_orchestrator.backends.job import Job, config_for


def run(job: Job) -> dict[str, Any]:
    runner = {
        "pretrain": _pretrain,
        "filter": _filter,
        "sft": _train,
        "psft": _train,
        "dft": _train,
        "iwsft": _train,
        "dpo": _dpo,
        "grpo": _grpo,
        "eval": _eval,
    }[job.kind]
    return runner(job)


def _pretrain(job: Job) -> dict[str, Any]:
    from psft_orchestrator.training.config import PretrainConfig
    from psft_orchestrator.training.pretrain import pretrain

    return pretrain(
        config_for(job, PretrainConfig),
        Path(job.input("model").path),
        Path(job.input("data").path),
        job.output_path(),
        job.out / "metrics.jsonl",
        Path(job.checkpoint_dir),
    )


def _train(job: Job) -> dict[str, Any]:
    from psft_orchestrator.training.loop import CONFIGS, train

    return train(
        job.kind,
        config_for(job, CONFIGS[job.kind]),
        Path(job.input("model").path),
        Path(job.input("data").path),
        job.output_path(),
        Path(job.checkpoint_dir),
        job.out / "metrics.jsonl",
        progress=False,
    )


def _filter(job: Job) -> dict[str, Any]:
    from psft_orchestrator.data.filter import run_filter

    return run_filter(job)


def _eval(job: Job) -> dict[str, Any]:
    from psft_orchestrator.evals.run import run_eval

    return run_eval(job)


def _dpo(job: Job) -> dict[str, Any]:
    from psft_orchestrator.training.dpo import run_dpo

    return run_dpo(job)


def _grpo(job: Job) -> dict[str, Any]:
    from psft_orchestrator.training.grpo import run_grpo

    return run_grpo(job)
