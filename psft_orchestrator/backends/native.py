"""The `native` backend: our own PyTorch code for every stage kind (the embedded default).

render → launch → collect is trivial here: the job already holds the resolved config, the
code runs in this process (the worker subprocess), and it writes the node's files itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psft_orchestrator.contract import Job, config_for


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
    from psft_orchestrator.configs.training import PretrainConfig
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

    cfg = config_for(job, CONFIGS[job.kind])
    scores = IntermediateEval(job, cfg) if cfg.eval_every and cfg.eval_suites else None
    summary = train(
        job.kind,
        cfg,
        Path(job.input("model").path),
        Path(job.input("data").path),
        job.output_path(),
        Path(job.checkpoint_dir),
        job.out / "metrics.jsonl",
        progress=False,
        on_step=scores,
    )
    if scores is not None:
        scores.write_outputs()
    return summary


class IntermediateEval:
    """Evaluate every `eval_every` steps during training (the paper's score-vs-step figures).

    Rows are appended to the checkpoint directory as they are computed, so a resumed run keeps
    the evaluations made before the crash; `outputs/scores.json` gets them all at the end.
    """

    def __init__(self, job: Job, cfg: Any):
        self.job, self.cfg = job, cfg
        self.path = Path(job.checkpoint_dir) / "intermediate_scores.jsonl"
        self.benchmarks = {ref.name: ref.path for ref in job.inputs.get("benchmarks", [])}
        self.total: int | None = None

    def __call__(self, step: int, model: Any, tokenizer: Any) -> None:
        if step % self.cfg.eval_every:
            return
        from psft_orchestrator.evals.run import evaluate_model

        rows = evaluate_model(model, tokenizer, self.cfg.eval_suites, self.benchmarks, step=step)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for row in rows:
                f.write(row.model_dump_json() + "\n")

    def write_outputs(self) -> None:
        import json

        rows: dict[tuple, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                r = json.loads(line)
                rows[(r["step"], r["suite"], r["benchmark"], r["metric"])] = (
                    r  # a resumed step wins
                )
        (self.job.out / "outputs" / "scores.json").write_text(
            json.dumps(list(rows.values()), indent=1)
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
