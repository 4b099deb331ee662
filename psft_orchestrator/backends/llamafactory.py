"""The `llamafactory` backend: DPO through LLaMA-Factory 0.9.5 (`llamafactory-cli train`).

render → launch → collect:

1. `render_config(job)` maps our `DPOConfig` to LLaMA-Factory's training arguments (a pure function,
   checked by tests without running anything); `run` writes it to `<node>/llamafactory/train.yaml`,
   the preference pairs to `<node>/llamafactory/data/pairs.jsonl` in LLaMA-Factory's ShareGPT
   ranking layout, and the matching `dataset_info.json`.
2. `llamafactory-cli train train.yaml` runs as a subprocess (its own process: LLaMA-Factory patches
   trl at import time, and a crash must not take the worker down silently); with LoRA,
   `llamafactory-cli export` then merges the adapter into a full HF model.
3. The final model + the input model's tokenizer go to `outputs/model`; the trainer's
   `log_history` becomes our `metrics.jsonl` under our names (`METRIC_NAMES`).

Choices that make this backend agree with the native one (`training.dpo`, cross-checked in
tests/training):
- No `template:` key. LLaMA-Factory then parses the model's own chat template, which reproduces the
  tokenizer's rendering token for token (tested). The registered `default` template is NOT the
  model's template: it is "Human: … Assistant:" and it rewrites the saved tokenizer's chat
  template (`replace_jinja_template`).
- `disable_shuffling: true`: pairs are used in file order, as the native trainer does, so both
  backends see the same batches.
- Batching: `train_batch_size` pairs per optimizer step = `micro_batch_size` per device ×
  gradient accumulation (× devices on a cluster; one process here).
- Known difference: LLaMA-Factory's response tokens are the assistant slot `content<|im_end|>\\n`,
  so the "\\n" after the end-of-turn token enters the sequence log-probs; the native trainer stops
  at `<|im_end|>` like the SFT stages. It also truncates over-long pairs instead of dropping them.

Checkpoints: LLaMA-Factory's `output_dir` lives under `job.checkpoint_dir` (stable across attempts);
LLaMA-Factory resumes from the newest `checkpoint-N` in it by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from psft_orchestrator.configs.training import DPOConfig
from psft_orchestrator.contract import Job, config_for

DATASET_NAME = "psft_pairs"

# LLaMA-Factory / HF Trainer log keys -> our metric names (others are dropped).
METRIC_NAMES: dict[str, str] = {
    "loss": "loss",
    "rewards/chosen": "rewards/chosen",
    "rewards/rejected": "rewards/rejected",
    "rewards/margins": "rewards/margins",
    "rewards/accuracies": "rewards/accuracies",
    "logps/chosen": "logps/chosen",
    "logps/rejected": "logps/rejected",
    "grad_norm": "grad_norm",
    "learning_rate": "lr",
    "epoch": "epoch",
}

# Files of a tokenizer directory (copied from the input model so the output's tokenizer and chat
# template are byte-identical to the input's).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)

SUBPROCESS_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "DISABLE_VERSION_CHECK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "FORCE_TORCHRUN": "0",
}


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - LLaMA-Factory needs torch anyway
        return False


def _lf_dir(job: Job) -> Path:
    return job.out / "llamafactory"


def _lr_scheduler(cfg: DPOConfig) -> tuple[str, dict[str, Any]]:
    """Our schedule names -> HF's. HF's plain `constant` ignores warm-up and plain `cosine` decays
    to 0, so warm-up and a cosine floor need the `_with_warmup` / `_with_min_lr` variants."""
    if cfg.lr_scheduler == "constant":
        return ("constant_with_warmup" if cfg.warmup_ratio > 0 else "constant"), {}
    if cfg.lr_scheduler == "cosine" and cfg.min_lr_ratio > 0:
        return "cosine_with_min_lr", {"min_lr_rate": cfg.min_lr_ratio}
    return cfg.lr_scheduler, {}


def render_config(job: Job, cuda: bool | None = None) -> dict[str, Any]:
    """LLaMA-Factory's training arguments for this DPO job (the content of train.yaml).

    Paths point into the node directory (`<node>/llamafactory/data`) and the checkpoint directory
    (`<checkpoint_dir>/llamafactory`, LLaMA-Factory's `output_dir`). `cuda` defaults to whether
    torch sees a GPU: then bf16, else `use_cpu`.
    """
    cfg = _supported_config(job)
    cuda = _cuda() if cuda is None else cuda
    micro = cfg.micro_batch_size
    scheduler, scheduler_kwargs = _lr_scheduler(cfg)
    lf = _lf_dir(job)
    out: dict[str, Any] = {
        # model
        "model_name_or_path": str(Path(job.input("model").path).resolve()),
        "trust_remote_code": False,
        # method
        "stage": "dpo",
        "do_train": True,
        "finetuning_type": cfg.finetuning_type,
        "pref_beta": cfg.beta,
        "pref_loss": cfg.loss_type,
        # data
        "dataset": DATASET_NAME,
        "dataset_dir": str((lf / "data").resolve()),
        "cutoff_len": cfg.max_length,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "disable_shuffling": True,
        # optimisation
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": cfg.train_batch_size // micro,
        "learning_rate": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "adam_beta1": cfg.betas[0],
        "adam_beta2": cfg.betas[1],
        "adam_epsilon": 1e-8,
        "max_grad_norm": cfg.grad_clip,
        "lr_scheduler_type": scheduler,
        "warmup_ratio": cfg.warmup_ratio,
        "num_train_epochs": cfg.epochs,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        # output
        "output_dir": str((Path(job.checkpoint_dir) / "llamafactory").resolve()),
        "logging_steps": cfg.log_every,
        "report_to": "none",
        "plot_loss": False,
        "save_only_model": False,
    }
    if scheduler_kwargs:
        out["lr_scheduler_kwargs"] = scheduler_kwargs
    if cfg.max_steps:
        out["max_steps"] = cfg.max_steps
    if cfg.save_every:
        out.update(save_strategy="steps", save_steps=cfg.save_every, save_total_limit=1)
    else:
        out["save_strategy"] = "no"
    if cfg.finetuning_type == "lora":
        out.update(lora_rank=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_target="all")
    amp = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and cuda)
    if not cuda:
        out["use_cpu"] = True
    elif amp:
        out["bf16"] = True
    return out


def _supported_config(job: Job) -> DPOConfig:
    """The job's DPO config, or a ValueError naming what LLaMA-Factory cannot run."""
    if job.kind != "dpo":
        raise ValueError(f"the llamafactory backend runs kind 'dpo' only, not {job.kind!r}")
    cfg: DPOConfig = config_for(job, DPOConfig)
    if cfg.freeze:
        raise ValueError("freeze patterns are not supported by the llamafactory backend")
    if cfg.train_batch_size % cfg.micro_batch_size:
        raise ValueError(
            f"train_batch_size ({cfg.train_batch_size}) must be a multiple of micro_batch_size "
            f"({cfg.micro_batch_size}) for LLaMA-Factory (pairs per step = per-device batch × "
            "gradient accumulation)"
        )
    if (cfg.mini_batch_size or cfg.train_batch_size) != cfg.train_batch_size:
        raise ValueError(
            "DPO takes one optimizer step per train batch; leave mini_batch_size unset"
        )
    return cfg


def render_export_config(job: Job) -> dict[str, Any]:
    """`llamafactory-cli export` arguments that merge the trained LoRA adapter into the base model."""
    train = render_config(job)
    return {
        "model_name_or_path": train["model_name_or_path"],
        "adapter_name_or_path": train["output_dir"],
        "finetuning_type": "lora",
        "export_dir": str((_lf_dir(job) / "merged").resolve()),
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }


def dataset_info() -> dict[str, Any]:
    """`dataset_info.json`: one ShareGPT-style ranking dataset (prompt turns + chosen/rejected turn)."""
    return {
        DATASET_NAME: {
            "file_name": "pairs.jsonl",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


def to_ranking_row(row: dict[str, Any]) -> dict[str, Any]:
    """Our preference row -> LLaMA-Factory's ShareGPT ranking row (system turn stays first)."""
    return {
        "messages": [{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
        "chosen": {"role": "assistant", "content": row["chosen"]},
        "rejected": {"role": "assistant", "content": row["rejected"]},
    }


def write_inputs(job: Job) -> Path:
    """Write train.yaml, dataset_info.json and the converted pairs; return the YAML path."""
    lf = _lf_dir(job)
    data = lf / "data"
    data.mkdir(parents=True, exist_ok=True)
    from psft_orchestrator.training.dpo import read_pairs

    pairs = read_pairs(job.input("data").path)
    if not pairs:
        raise ValueError(f"no preference pairs in {job.input('data').path}")
    with (data / "pairs.jsonl").open("w") as f:
        for row in pairs:
            f.write(json.dumps(to_ranking_row(row), ensure_ascii=False) + "\n")
    (data / "dataset_info.json").write_text(json.dumps(dataset_info(), indent=2))
    cfg_path = lf / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(render_config(job), sort_keys=False))
    return cfg_path


def _cli() -> list[str]:
    """`llamafactory-cli` of this interpreter's environment."""
    exe = Path(sys.executable).with_name("llamafactory-cli")
    return [str(exe)] if exe.exists() else ["llamafactory-cli"]


def _launch(args: list[str], log: Path) -> None:
    env = {**os.environ, **SUBPROCESS_ENV}
    env.pop("USE_RAY", None)  # USE_RAY=1 reserves 10 CPUs and a GPU per worker
    print(f"[llamafactory] {' '.join(args)}  (log: {log})", flush=True)
    with log.open("a") as f:
        proc = subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(
            f"{' '.join(args)} exited with {proc.returncode}; last lines of {log}:\n{tail}"
        )


def _prepare_output_dir(output_dir: Path) -> None:
    """LLaMA-Factory resumes from `checkpoint-N` in output_dir and refuses a non-empty one without
    any; a finished-but-uncollected earlier attempt leaves exactly that, so start it over."""
    if output_dir.exists() and not any(output_dir.glob("checkpoint-*")):
        shutil.rmtree(output_dir)


def collect_metrics(trainer_state: Path) -> list[dict[str, Any]]:
    """One row per logged training step from trainer_state.json's `log_history`, our names."""
    history = json.loads(Path(trainer_state).read_text())["log_history"]
    rows = []
    for entry in history:
        if "loss" not in entry or "step" not in entry:  # the final train_runtime summary, evals
            continue
        row = {"step": int(entry["step"])}
        row.update(
            {ours: entry[theirs] for theirs, ours in METRIC_NAMES.items() if theirs in entry}
        )
        rows.append(row)
    return rows


def _install_model(src: Path, tokenizer_src: Path, dst: Path) -> None:
    """Copy the model files of `src` (no checkpoints, logs or optimizer state) to `dst`, with the
    tokenizer files of the input model; atomically (tmp dir + rename)."""
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        weights = f.suffix in (".safetensors", ".bin") and f.name != "training_args.bin"
        if f.is_file() and (
            weights
            or f.name.endswith(".index.json")
            or f.name in ("config.json", "generation_config.json")
        ):
            shutil.copy2(f, tmp / f.name)
    for name in TOKENIZER_FILES:
        if (tokenizer_src / name).exists():
            shutil.copy2(tokenizer_src / name, tmp / name)
    if not any(tmp.glob("*.safetensors")) and not any(tmp.glob("*.bin")):
        raise RuntimeError(f"LLaMA-Factory left no model weights in {src}")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def run(job: Job) -> dict[str, Any]:
    cfg: DPOConfig = config_for(job, DPOConfig)
    cfg_path = write_inputs(job)
    train_args = yaml.safe_load(cfg_path.read_text())
    output_dir = Path(train_args["output_dir"])
    _prepare_output_dir(output_dir)
    log = _lf_dir(job) / "train.log"
    _launch([*_cli(), "train", str(cfg_path)], log)

    model_dir = output_dir
    if cfg.finetuning_type == "lora":
        export_path = _lf_dir(job) / "export.yaml"
        export = render_export_config(job)
        export_path.write_text(yaml.safe_dump(export, sort_keys=False))
        _launch([*_cli(), "export", str(export_path)], _lf_dir(job) / "export.log")
        model_dir = Path(export["export_dir"])

    _install_model(model_dir, Path(train_args["model_name_or_path"]), job.output_path())
    rows = collect_metrics(output_dir / "trainer_state.json")
    # Written whole (not appended): log_history already holds the steps of a resumed attempt.
    with (job.out / "metrics.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for name in ("trainer_state.json", "trainer_log.jsonl", "all_results.json"):
        if (output_dir / name).exists():
            shutil.copy2(output_dir / name, _lf_dir(job) / name)
    if model_dir != output_dir:
        shutil.rmtree(model_dir, ignore_errors=True)  # the merged copy now lives in outputs/model
    last = rows[-1] if rows else {}
    return {
        "backend": "llamafactory",
        "steps": last.get("step"),
        "final_loss": last.get("loss"),
        "final_margin": last.get("rewards/margins"),
        "final_accuracy": last.get("rewards/accuracies"),
        "pairs": sum(1 for _ in (_lf_dir(job) / "data" / "pairs.jsonl").open()),
    }
