"""Launch verl as a subprocess and collect what it wrote: metrics, checkpoints, the HF model.

verl's processes are started with `torchrun` (SFT family) or `python` (main_ppo), never imported
into the worker: verl sets process-wide state (env vars, the process group, Ray) at import and run.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from psft_orchestrator.backends.verl.render import HYDRA_RUN
from psft_orchestrator.contract import MetricsWriter

# verl metric name -> ours (native backend names). Anything else is dropped: perf/* and mfu are
# meaningless on CPU and vary run to run.
METRIC_NAMES = {
    "train/loss": "loss",
    "train/lr": "lr",
    "train/grad_norm": "grad_norm",
    "train/global_tokens": "tokens",
    # our dft / psft entry points
    "train/entropy": "entropy",
    "train/ce": "ce",
    "train/clipfrac": "clipfrac",
    "train/clipfrac_lower": "clipfrac_lower",
    "train/ppo_kl": "ppo_kl",
    # main_ppo (GRPO)
    "actor/pg_loss": "loss",
    "actor/entropy": "entropy",
    "actor/pg_clipfrac": "clipfrac",
    "actor/pg_clipfrac_lower": "clipfrac_lower",
    "actor/ppo_kl": "ppo_kl",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "lr",
    "critic/score/mean": "reward",
    "response_length/mean": "response_length",
}


class VerlRunError(RuntimeError):
    """verl's process exited non-zero; the message carries the tail of its output."""


def cpu_shim_active() -> bool:
    """True when the test-only CPU platform plug-in is requested (tests/verl/verl_cpu_platform.py)."""
    return os.environ.get("VERL_PLATFORM", "").lower() == "cpu" and bool(
        os.environ.get("VERL_USE_EXTERNAL_MODULES")
    )


def base_env(metrics_log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "VERL_FILE_LOGGER_PATH": str(metrics_log),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "WANDB_MODE": "disabled",
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE", "disabled"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def torchrun_command(module: str, overrides: list[str], nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *overrides,
        *HYDRA_RUN,
    ]


def run_logged(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run `cmd`, streaming its output into ours (the node log); raise with its tail on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    print("[verl] " + " ".join(cmd), flush=True)
    with subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        raise VerlRunError(f"verl exited with status {rc}; last lines:\n" + "\n".join(tail))


# ----------------------------------------------------------------------------- metrics


def read_verl_metrics(path: Path) -> dict[int, dict[str, Any]]:
    """verl's file-logger lines {"step": N, "data": {...}} by step; a resumed run's repeat wins."""
    by_step: dict[int, dict[str, Any]] = {}
    if not Path(path).exists():
        return by_step
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step.setdefault(int(row["step"]), {}).update(row.get("data", {}))
    return by_step


def sum_parts(value: Any) -> float:
    """A metric verl returned per micro-batch (nested lists, per rank and micro-batch) -> its total.

    Our loss functions log each micro-batch's *part* of a token mean (losses.py), so the total is
    the mean over the whole mini-batch."""
    if isinstance(value, list | tuple):
        return float(sum(sum_parts(v) for v in value))
    return float(value)


def map_metrics(verl_rows: dict[int, dict[str, Any]], log_every: int = 1) -> list[dict[str, Any]]:
    """Our metrics rows from verl's: renamed, lists (per-micro-batch parts) summed, every `log_every`."""
    out = []
    last = max(verl_rows) if verl_rows else 0
    for step in sorted(verl_rows):
        if step % log_every and step != last:
            continue
        row: dict[str, Any] = {"step": step}
        for key, value in verl_rows[step].items():
            if key in METRIC_NAMES:
                row[METRIC_NAMES[key]] = sum_parts(value) if isinstance(value, list) else value
        out.append(row)
    return out


def write_metrics(rows: list[dict[str, Any]], path: Path) -> None:
    path.unlink(missing_ok=True)  # rewritten whole: the verl log in checkpoint_dir is the record
    with MetricsWriter(path) as w:
        for row in rows:
            w.log(**row)


# ----------------------------------------------------------------------------- model export


def latest_checkpoint(checkpoint_dir: Path) -> Path:
    tracker = Path(checkpoint_dir) / "latest_checkpointed_iteration.txt"
    if not tracker.exists():
        raise VerlRunError(f"verl wrote no checkpoint under {checkpoint_dir}")
    return Path(checkpoint_dir) / f"global_step_{int(tracker.read_text().strip())}"


def export_hf_model(step_dir: Path, base_model: Path, out_dir: Path) -> Path:
    """Copy `<global_step_N>/huggingface` (written by save_contents hf_model) to `out_dir`.

    verl stamps `"dtype": "bfloat16"` into config.json even when the weights are fp32; since
    transformers 5 loads with the config's dtype by default, a later stage would silently get
    bf16 weights. The base model's dtype and generation config (stop tokens) are restored.
    Falls back to verl's model merger when the folder is missing (save_contents without hf_model).
    """
    hf = step_dir / "huggingface"
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if hf.is_dir():
        shutil.copytree(hf, tmp)
    else:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "verl.model_merger",
                "merge",
                "--backend",
                "fsdp",
                "--local_dir",
                str(step_dir),
                "--target_dir",
                str(tmp),
            ],
            check=True,
        )
    base_cfg = json.loads((base_model / "config.json").read_text())
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in base_cfg:
            cfg[key] = base_cfg[key]
        elif key in cfg:
            cfg[key] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    for name in (
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
    ):
        src = base_model / name
        if src.exists() and (name == "generation_config.json" or not (tmp / name).exists()):
            shutil.copy2(src, tmp / name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return out_dir
