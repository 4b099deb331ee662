"""sft / dft / psft on verl: render -> compose + check -> torchrun -> metrics + HF model.

Files in the node directory: `verl/train.parquet`, `verl/config.yaml` (the composed config verl
ran with), `verl/command.json` (argv and overrides), `metrics.jsonl` (our names), the model at
`outputs/model/`. verl's own checkpoints and its raw metrics log stay in `job.checkpoint_dir`,
which survives a failed attempt, so a retry resumes (trainer.resume_mode=auto).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psft_orchestrator.backends.verl import launch, render, validate
from psft_orchestrator.contract import Job
from psft_orchestrator.data.formats import convert, iter_rows


def load_rows(job: Job, max_length: int, truncation: str) -> tuple[list[dict[str, Any]], int]:
    """The dataset as verl rows; with truncation=drop, rows over max_length tokens are left out
    (verl itself can only raise or cut). Returns (rows, number dropped)."""
    ref = job.input("data")
    rows = render.sft_rows(convert(r, ref.format, "dataset") for r in iter_rows(ref.path))
    if truncation != "drop":
        return rows, 0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(job.input("model").path)
    kept = [
        r for r in rows if len(tok.apply_chat_template(r["messages"], tokenize=True)) <= max_length
    ]
    return kept, len(rows) - len(kept)


def n_processes(job: Job) -> int:
    import torch

    if launch.cpu_shim_active():
        return 1
    if not torch.cuda.is_available():
        raise RuntimeError(
            "the verl backend needs GPUs: verl 0.9.1 only runs on nvidia/npu/rocm platforms. On a CPU "
            "machine only the test-only platform shim (tests/verl/verl_cpu_platform.py, loaded with "
            "VERL_USE_EXTERNAL_MODULES=verl_cpu_platform VERL_PLATFORM=cpu) can run it; use backend native."
        )
    return int(job.config.resources.gpus or torch.cuda.device_count())


def run_sft_family(job: Job) -> dict[str, Any]:
    kind = job.kind
    cfg = render.validated(kind, job.config_data())
    nproc = n_processes(job)
    work = job.out / "verl"
    ckpt = Path(job.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    rows, dropped = load_rows(job, cfg.max_length, cfg.truncation)
    train_file = render.write_parquet(rows, work / "train.parquet")
    overrides = render.sft_overrides(
        kind,
        cfg,
        train_file=train_file,
        model_path=job.input("model").path,
        checkpoint_dir=ckpt,
        n_rows=len(rows),
        nproc=nproc,
        name=job.node_id,
    )
    if launch.cpu_shim_active():
        overrides += render.CPU_OVERRIDES
    composed = validate.compose(kind, overrides)
    validate.check(kind, composed)
    (work / "config.yaml").write_text(validate.to_yaml(composed))
    cmd = launch.torchrun_command(render.ENTRY_POINTS[kind], overrides, nproc)
    (work / "command.json").write_text(json.dumps({"argv": cmd, "overrides": overrides}, indent=2))

    verl_log = ckpt / "verl_metrics.jsonl"
    launch.run_logged(cmd, launch.base_env(verl_log), cwd=work)

    rows_out = launch.map_metrics(launch.read_verl_metrics(verl_log), cfg.log_every)
    launch.write_metrics(rows_out, job.out / "metrics.jsonl")
    step_dir = launch.latest_checkpoint(ckpt)
    launch.export_hf_model(step_dir, Path(job.input("model").path), job.output_path())
    final = rows_out[-1] if rows_out else {}
    summary = {
        "steps": final.get("step"),
        "rows": len(rows),
        "rows_dropped": dropped,
        "backend": "verl",
        "checkpoint": step_dir.name,
    }
    for key in ("loss", "entropy", "ce", "clipfrac", "grad_norm"):
        if key in final:
            summary[f"final_{key}"] = final[key]
    return summary
