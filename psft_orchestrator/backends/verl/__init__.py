"""The `verl` backend: SFT, DFT and PSFT on verl's training worker; GRPO/DAPO through main_ppo.

    run(job) -> summary dict          called by backends.worker in the verl interpreter
    validate_node_config(kind, cfg)   plan-time check: render, compose against verl's config
                                      tree, run verl's own validation; raises on a bad config
    render_overrides(kind, cfg)       the Hydra overrides (placeholder paths), for `--plan` output

Modules: `render` (rows + overrides, pure), `validate` (Hydra compose + verl checks), `launch`
(subprocess, metrics, model export), `train` (sft/dft/psft flow), `grpo` (GRPO flow, GPU only),
`losses` (our losses in verl's loss-function shape), `dft_main` / `psft_main` (torchrun entry
points), `reward` (Math-Verify reward for main_ppo). See docs/backends/verl.md.
"""

from __future__ import annotations

from typing import Any

from psft_orchestrator.contract import Job

# Placeholders for plan time, when inputs do not exist yet. Hydra does not look at paths.
_PLAN_PATHS = {
    "train_file": "/plan/train.parquet",
    "model_path": "/plan/model",
    "checkpoint_dir": "/plan/ckpt",
}


def render_overrides(kind: str, config: dict[str, Any]) -> list[str]:
    """The overrides this stage config renders to, with placeholder paths and one GPU."""
    from psft_orchestrator.backends.verl import render

    cfg = render.validated(kind, config)
    if kind == "grpo":
        return render.grpo_overrides(cfg, **_PLAN_PATHS)
    # One epoch's worth of rows (one verl batch) is enough to render the step arithmetic.
    n_rows = cfg.train_batch_size
    return render.sft_overrides(kind, cfg, n_rows=n_rows, **_PLAN_PATHS)


def validate_node_config(kind: str, config: dict[str, Any]) -> None:
    """Raise `render.UnsupportedConfig` or `validate.VerlConfigError` (both ValueError) naming the
    problem, or return None when verl accepts the config. Imports verl (and so torch): ~seconds."""
    from psft_orchestrator.backends.verl import validate

    overrides = render_overrides(kind, config)
    validate.check(kind, validate.compose(kind, overrides))


def run(job: Job) -> dict[str, Any]:
    if job.kind == "grpo":
        from psft_orchestrator.backends.verl.grpo import run_grpo

        return run_grpo(job)
    from psft_orchestrator.backends.verl.train import run_sft_family

    return run_sft_family(job)
