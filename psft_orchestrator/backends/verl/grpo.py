"""GRPO with the DAPO techniques through `python -m verl.trainer.main_ppo`. GPU ONLY.

verl's rollout (`actor_rollout_ref.rollout.name`) must be vllm, sglang or trtllm, all GPU
engines, so on a machine without CUDA `run_grpo` stops at once with that explanation; rendering,
Hydra composition and verl's `validate_config` still run everywhere (see `validate_node_config`).

The run joins the orchestrator's Ray cluster when RAY_ADDRESS is set (+ray_kwargs.ray_init.address);
the Ray task that runs this worker must hold no GPU itself (num_gpus=0): verl reserves its GPUs
through placement groups and would wait forever for one we held.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from psft_orchestrator.backends.verl import launch, render, validate
from psft_orchestrator.contract import Job
from psft_orchestrator.data.formats import convert, iter_rows


def grpo_command(overrides: list[str]) -> list[str]:
    import sys

    return [sys.executable, "-m", render.ENTRY_POINTS["grpo"], *overrides, *render.HYDRA_RUN]


def run_grpo(job: Job) -> dict[str, Any]:
    import torch

    cfg = render.validated("grpo", job.config_data())
    if not torch.cuda.is_available():
        raise RuntimeError(
            "GRPO on verl needs GPUs: its rollout engine (vllm or sglang) does not run on CPU. "
            "Use backend native for GRPO on this machine, or run this node on a GPU host "
            "(docs/backends/verl.md)."
        )
    ref = job.input("data")
    rows = render.rl_rows(
        (convert(r, ref.format, "prompts") for r in iter_rows(ref.path)), cfg.format_reward
    )
    work = job.out / "verl"
    ckpt = Path(job.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    train_file = render.write_parquet(rows, work / "train.parquet")
    overrides = render.grpo_overrides(
        cfg,
        train_file=train_file,
        model_path=job.input("model").path,
        checkpoint_dir=ckpt,
        n_gpus=int(job.config.resources.gpus or torch.cuda.device_count()),
        ray_address=os.environ.get("RAY_ADDRESS"),
        name=job.node_id,
    )
    composed = validate.compose("grpo", overrides)
    validate.check("grpo", composed)
    (work / "config.yaml").write_text(validate.to_yaml(composed))
    cmd = grpo_command(overrides)
    (work / "command.json").write_text(json.dumps({"argv": cmd, "overrides": overrides}, indent=2))

    verl_log = ckpt / "verl_metrics.jsonl"
    launch.run_logged(cmd, launch.base_env(verl_log), cwd=work)

    rows_out = launch.map_metrics(launch.read_verl_metrics(verl_log), cfg.log_every)
    launch.write_metrics(rows_out, job.out / "metrics.jsonl")
    # main_ppo's layout: global_step_N/actor/{huggingface,...}
    step_dir = launch.latest_checkpoint(ckpt) / "actor"
    launch.export_hf_model(step_dir, Path(job.input("model").path), job.output_path())
    final = rows_out[-1] if rows_out else {}
    return {
        "steps": final.get("step"),
        "final_reward": final.get("reward"),
        "final_entropy": final.get("entropy"),
        "backend": "verl",
    }
