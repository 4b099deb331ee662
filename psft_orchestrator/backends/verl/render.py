"""Render a job into verl's inputs: parquet files in verl's row formats and Hydra overrides.

Pure functions, no torch and no verl import: the planner may call them on any machine.

    sft / dft / psft  -> `torchrun ... -m <entry> <overrides>`  (config `sft_trainer_engine`)
    grpo              -> `python -m verl.trainer.main_ppo <overrides>` (config `ppo_trainer`)

Every override is written out, including values equal to verl's defaults where verl's default
is wrong for us (optim.lr is 1e-3, the logger includes wandb, ...), so the composed config in the
node directory reads as the full record of what ran. Fields verl cannot honour raise
`UnsupportedConfig` instead of being dropped silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from psft_orchestrator.configs.training import (
    DFTConfig,
    GRPOConfig,
    PSFTConfig,
    SFTConfig,
    TrainConfig,
)

SFT_KINDS = ("sft", "dft", "psft")
KINDS = (*SFT_KINDS, "grpo")
CONFIGS: dict[str, type[TrainConfig]] = {
    "sft": SFTConfig,
    "dft": DFTConfig,
    "psft": PSFTConfig,
    "grpo": GRPOConfig,
}
# The Hydra config (in verl/trainer/config) each kind composes against.
CONFIG_NAMES = {
    "sft": "sft_trainer_engine",
    "dft": "sft_trainer_engine",
    "psft": "sft_trainer_engine",
    "grpo": "ppo_trainer",
}
# The module torchrun / python runs. sft is verl's own trainer, unmodified.
ENTRY_POINTS = {
    "sft": "verl.trainer.sft_trainer",
    "dft": "psft_orchestrator.backends.verl.dft_main",
    "psft": "psft_orchestrator.backends.verl.psft_main",
    "grpo": "verl.trainer.main_ppo",
}
REWARD_FUNCTION = Path(__file__).with_name("reward.py")

# Overrides that make verl's SFT trainer run on CPU with the test-only platform plug-in
# (tests/verl/verl_cpu_platform.py): no torch.compile, fp32 everywhere, eager attention, fixed
# micro-batches (dynamic batching needs flash-attn style packing), gloo via trainer.device=cpu.
CPU_OVERRIDES = [
    "engine.strategy=fsdp2",
    "engine.use_torch_compile=false",
    "engine.model_dtype=fp32",
    "++engine.mixed_precision.param_dtype=fp32",
    "++engine.mixed_precision.reduce_dtype=fp32",
    "++engine.mixed_precision.buffer_dtype=fp32",
    "model.enable_gradient_checkpointing=false",
    "+model.override_config.attn_implementation=eager",
    "data.use_dynamic_bsz=false",
    "data.num_workers=0",
    "trainer.device=cpu",
]


# Hydra's own run settings, appended to the command line only (not config keys): no
# outputs/<date>/<time>/ folder with a second copy of the config and log.
HYDRA_RUN = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


class UnsupportedConfig(ValueError):
    """A config field the verl backend cannot honour (it would otherwise be silently ignored)."""


# ----------------------------------------------------------------------------- override syntax


def q(value: Any) -> str:
    """One value in Hydra's override grammar: quoted strings, [a,b] lists, lower-case bools."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(q(v) for v in value) + "]"
    # Quote every string: node ids such as "train[method=PSFT,seed=1]" and paths contain
    # characters ([ ] = , :) that Hydra's grammar would otherwise parse.
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def kv(key: str, value: Any) -> str:
    return f"{key}={q(value)}"


# ----------------------------------------------------------------------------- parquet rows


def sft_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our `dataset` rows -> verl's multi-turn SFT rows: only the chat `messages` column."""
    out = []
    for i, row in enumerate(rows):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not any(m.get("role") == "assistant" for m in msgs):
            raise ValueError(f"dataset row {i} has no `messages` list with an assistant turn")
        out.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]})
    return out


def rl_rows(rows: Iterable[dict[str, Any]], format_reward: float = 0.0) -> list[dict[str, Any]]:
    """Our `prompts` rows -> verl's RL rows (data_source, prompt, ability, reward_model, extra_info)."""
    out = []
    for i, row in enumerate(rows):
        if "prompt" not in row or "ground_truth" not in row:
            raise ValueError(f"prompts row {i} needs `prompt` and `ground_truth`")
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        out.append(
            {
                "data_source": str(row.get("data_source") or "unknown"),
                "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(row["ground_truth"])},
                # Read back by reward.compute_score; index keeps rows traceable in verl's dumps.
                "extra_info": {"index": i, "format_reward": float(format_reward)},
            }
        )
    return out


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- checks


def unsupported(kind: str, cfg: TrainConfig) -> list[str]:
    """Messages for every set field verl cannot honour for this kind (empty list = fine)."""
    problems = []
    if cfg.loss_agg_mode != "token-mean":
        problems.append(
            f"loss_agg_mode={cfg.loss_agg_mode!r}: the verl backend implements token-mean only "
            "for the SFT family (verl's sft_loss); use backend native"
        )
    if cfg.freeze:
        problems.append("freeze: verl's SFT trainer has no parameter freezing; use backend native")
    if cfg.lr_scheduler not in ("constant", "cosine"):
        problems.append(
            f"lr_scheduler={cfg.lr_scheduler!r}: verl's FSDP optimizer supports constant and cosine"
        )
    if isinstance(cfg, SFTConfig) and cfg.kl is not None:
        problems.append(
            "kl (SFT-KL) needs a frozen reference model, which the verl SFT path does not load; "
            "use backend native"
        )
    if isinstance(cfg, PSFTConfig):
        if cfg.old_policy != "per_batch":
            problems.append("old_policy='initial' is not implemented on verl; use backend native")
        if cfg.entropy_top_frac is not None:
            problems.append(
                "entropy_top_frac (PSFT-Ent) is not implemented on verl; use backend native"
            )
    if kind == "grpo" and cfg.dtype == "float32":
        problems.append(
            "dtype=float32: verl's GRPO path trains in bf16 mixed precision; leave dtype auto"
        )
    return problems


def validated(kind: str, config: dict[str, Any]) -> TrainConfig:
    """The stage config as our typed model, with verl-unsupported fields rejected."""
    if kind not in CONFIGS:
        raise UnsupportedConfig(
            f"kind {kind!r} is not available on the verl backend (supports {', '.join(KINDS)})"
        )
    cls = CONFIGS[kind]
    cfg = cls.model_validate({k: v for k, v in config.items() if k in cls.model_fields})
    problems = unsupported(kind, cfg)
    if problems:
        raise UnsupportedConfig("; ".join(problems))
    return cfg


# ----------------------------------------------------------------------------- SFT family


def sft_schedule(cfg: TrainConfig, n_rows: int, kind: str) -> dict[str, int]:
    """Batch sizes and step counts as verl's SFT trainer sees them.

    verl's SFT trainer takes one optimizer step per data-loader batch. For sft/dft our
    mini-batch is therefore verl's batch (plain SFT with k mini-batches per train batch is SFT
    with batch = mini-batch). PSFT keeps the train batch (the θ_old refresh unit) as verl's batch
    and splits it into mini-batches in our entry point.
    """
    mini = cfg.mini_batch_size or cfg.train_batch_size
    batch = cfg.train_batch_size if kind == "psft" else mini
    per_batch = cfg.train_batch_size // mini if kind == "psft" else 1
    batches_per_epoch = n_rows // batch  # verl's sampler drops the last partial batch
    if batches_per_epoch == 0:
        raise ValueError(f"{n_rows} rows cannot fill one batch of {batch}")
    if cfg.max_steps:
        optimizer_steps = cfg.max_steps
    else:
        optimizer_steps = max(1, math.ceil(cfg.epochs * batches_per_epoch)) * per_batch
    batches = math.ceil(optimizer_steps / per_batch)
    return {
        "batch": batch,
        "mini_batch": mini,
        "optimizer_steps": optimizer_steps,
        "batches": batches,
        "epochs": math.ceil(batches / batches_per_epoch),
        "batches_per_epoch": batches_per_epoch,
    }


def sft_overrides(
    kind: str,
    cfg: TrainConfig,
    *,
    train_file: str | Path,
    model_path: str | Path,
    checkpoint_dir: str | Path,
    n_rows: int,
    nproc: int = 1,
    name: str = "node",
) -> list[str]:
    """Hydra overrides for verl's SFT trainer (and our dft/psft entry points built on it)."""
    s = sft_schedule(cfg, n_rows, kind)
    if s["batch"] % nproc or s["mini_batch"] % nproc:
        raise UnsupportedConfig(
            f"batch sizes ({s['batch']}, mini {s['mini_batch']}) must be divisible by "
            f"the number of processes ({nproc})"
        )
    o = [
        kv("data.train_files", str(train_file)),
        "data.val_files=null",
        "data.messages_key=messages",
        kv("data.train_batch_size", s["batch"]),
        kv("data.micro_batch_size_per_gpu", min(cfg.micro_batch_size, s["mini_batch"] // nproc)),
        kv("data.max_length", cfg.max_length),
        # Rows longer than max_length were dropped at render time when truncation=drop; "right"
        # is the safety net for the few tokens by which verl's per-turn tokenisation may differ.
        "data.truncation=right",
        # Our batching is fixed-size micro-batches; dynamic batching would change the grouping.
        "data.use_dynamic_bsz=false",
        kv("model.path", str(model_path)),
        kv("optim.lr", cfg.lr),
        kv("optim.weight_decay", cfg.weight_decay),
        kv("optim.betas", list(cfg.betas)),
        kv("optim.clip_grad", cfg.grad_clip),
        kv("optim.lr_scheduler_type", cfg.lr_scheduler),
        kv("optim.lr_warmup_steps_ratio", cfg.warmup_ratio),
        kv("optim.min_lr_ratio", cfg.min_lr_ratio),
        kv("trainer.total_epochs", s["epochs"]),
        kv("trainer.total_training_steps", s["batches"]),
        kv("trainer.seed", cfg.seed),
        kv("engine.seed", cfg.seed),
        "trainer.logger=['console','file']",
        kv("trainer.default_local_dir", str(checkpoint_dir)),
        # checkpoint_dir belongs to this node's fingerprint only, so "auto" resumes exactly the
        # attempts of this node (and never another node's checkpoints).
        "trainer.resume_mode=auto",
        kv("trainer.save_freq", cfg.save_every if cfg.save_every else -1),
        "trainer.max_ckpt_to_keep=1",
        "checkpoint.save_contents=['model','optimizer','extra','hf_model']",
        kv("trainer.project_name", "psft-orchestrator"),
        kv("trainer.experiment_name", name),
        "trainer.nnodes=1",
        kv("trainer.n_gpus_per_node", nproc),
    ]
    if cfg.dtype == "float32":
        o += [
            "++engine.mixed_precision.param_dtype=fp32",
            "++engine.mixed_precision.reduce_dtype=fp32",
            "++engine.mixed_precision.buffer_dtype=fp32",
        ]
    if isinstance(cfg, PSFTConfig):
        o += [
            kv("+psft.mini_batch_size", s["mini_batch"]),
            kv("+psft.optimizer_steps", s["optimizer_steps"]),
            kv("+psft.clip_low", cfg.clip_low),
            kv("+psft.clip_high", cfg.clip_high),
            kv("+psft.warmup_sft_steps", cfg.warmup_sft_steps),
        ]
    return o


# ----------------------------------------------------------------------------- GRPO (GPU only)


def grpo_overrides(
    cfg: GRPOConfig,
    *,
    train_file: str | Path,
    model_path: str | Path,
    checkpoint_dir: str | Path,
    n_gpus: int = 1,
    nnodes: int = 1,
    rollout: str = "vllm",
    ray_address: str | None = None,
    name: str = "node",
) -> list[str]:
    """Hydra overrides for `verl.trainer.main_ppo` with the DAPO settings. GPU ONLY to run.

    Rendering and validation work anywhere; the rollout engine (vllm/sglang) needs GPUs.
    """
    o = [
        *_grpo_data(cfg, train_file, model_path),
        *_grpo_actor(cfg),
        *_grpo_rollout(cfg, rollout),
        *_grpo_algorithm_and_reward(cfg),
        *_grpo_trainer(cfg, checkpoint_dir, name, nnodes, n_gpus),
    ]
    if ray_address:
        o.append(kv("+ray_kwargs.ray_init.address", ray_address))
    return o


def _grpo_data(cfg: GRPOConfig, train_file: str | Path, model_path: str | Path) -> list[str]:
    """The prompts and the policy model."""
    return [
        kv("data.train_files", str(train_file)),
        # main_ppo always builds a validation set; we never validate inside verl (our eval stage
        # does), so it is the train file and val_before_train / test_freq are off.
        kv("data.val_files", str(train_file)),
        "data.prompt_key=prompt",
        kv("data.train_batch_size", cfg.train_batch_size),
        kv("data.max_prompt_length", cfg.max_prompt_length),
        kv("data.max_response_length", cfg.max_response_length),
        "data.filter_overlong_prompts=true",
        "data.truncation=error",
        kv("data.seed", cfg.seed),
        kv("actor_rollout_ref.model.path", str(model_path)),
        "actor_rollout_ref.model.use_remove_padding=true",
    ]


def _grpo_actor(cfg: GRPOConfig) -> list[str]:
    """The actor's optimizer, batches and DAPO clipped loss."""
    actor = "actor_rollout_ref.actor"
    mini = cfg.mini_batch_size or cfg.train_batch_size
    return [
        kv(f"{actor}.optim.lr", cfg.lr),
        kv(f"{actor}.optim.weight_decay", cfg.weight_decay),
        kv(f"{actor}.optim.betas", list(cfg.betas)),
        kv(f"{actor}.optim.lr_scheduler_type", cfg.lr_scheduler),
        kv(f"{actor}.optim.lr_warmup_steps_ratio", cfg.warmup_ratio),
        kv(f"{actor}.optim.min_lr_ratio", cfg.min_lr_ratio),
        kv(f"{actor}.grad_clip", cfg.grad_clip),
        kv(f"{actor}.ppo_mini_batch_size", mini),
        kv(f"{actor}.ppo_micro_batch_size_per_gpu", cfg.micro_batch_size),
        f"{actor}.use_dynamic_bsz=false",
        f"{actor}.ppo_epochs=1",
        kv(f"{actor}.clip_ratio_low", cfg.clip_low),
        kv(f"{actor}.clip_ratio_high", cfg.clip_high),
        kv(f"{actor}.loss_agg_mode", cfg.loss_agg_mode),
        kv(f"{actor}.use_kl_loss", cfg.kl_coef > 0),
        kv(f"{actor}.kl_loss_coef", cfg.kl_coef),
        f"{actor}.kl_loss_type=low_var_kl",
        f"{actor}.entropy_coeff=0",
        # logs actor/entropy (the paper's RL entropy curve)
        f"{actor}.calculate_entropy=true",
        kv(f"{actor}.data_loader_seed", cfg.seed),
        kv(f"{actor}.checkpoint.save_contents", ["model", "optimizer", "extra", "hf_model"]),
    ]


def _grpo_rollout(cfg: GRPOConfig, rollout: str) -> list[str]:
    """Sampling the group of responses per prompt (and the log-prob passes)."""
    roll = "actor_rollout_ref.rollout"
    return [
        kv(f"{roll}.name", rollout),
        kv(f"{roll}.n", cfg.rollout_n),
        kv(f"{roll}.temperature", cfg.temperature),
        kv(f"{roll}.top_p", cfg.top_p),
        f"{roll}.tensor_model_parallel_size=1",
        kv(f"{roll}.log_prob_micro_batch_size_per_gpu", cfg.micro_batch_size),
        kv("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", cfg.micro_batch_size),
    ]


def _grpo_algorithm_and_reward(cfg: GRPOConfig) -> list[str]:
    """GRPO advantages, dynamic sampling and the DAPO reward with its overlong shaping."""
    return [
        "algorithm.adv_estimator=grpo",
        "algorithm.norm_adv_by_std_in_grpo=true",
        "algorithm.use_kl_in_reward=false",
        kv("algorithm.filter_groups.enable", cfg.dynamic_sampling),
        "algorithm.filter_groups.metric=reward",
        "algorithm.filter_groups.max_num_gen_batches=10",
        kv("reward.custom_reward_function.path", str(REWARD_FUNCTION)),
        "reward.custom_reward_function.name=compute_score",
        "reward.reward_manager.name=dapo",
        kv("+reward.reward_kwargs.overlong_buffer_cfg.enable", cfg.overlong_buffer > 0),
        kv("+reward.reward_kwargs.overlong_buffer_cfg.len", cfg.overlong_buffer),
        kv("+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor", cfg.overlong_penalty),
        "+reward.reward_kwargs.overlong_buffer_cfg.log=false",
        kv("+reward.reward_kwargs.max_resp_len", cfg.max_response_length),
    ]


def _grpo_trainer(
    cfg: GRPOConfig, checkpoint_dir: str | Path, name: str, nnodes: int, n_gpus: int
) -> list[str]:
    """Length of the run, checkpoints, logging and the cluster shape."""
    return [
        kv("trainer.total_training_steps", cfg.total_steps),
        # Enough epochs that total_training_steps, not the epoch count, ends the run.
        kv("trainer.total_epochs", cfg.total_steps),
        "trainer.logger=['console','file']",
        kv("trainer.default_local_dir", str(checkpoint_dir)),
        "trainer.resume_mode=auto",
        kv("trainer.save_freq", cfg.save_every if cfg.save_every else -1),
        "trainer.max_actor_ckpt_to_keep=1",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        # v1 is verl's default trainer and the one that implements filter_groups (dynamic
        # sampling) in 0.9.1; it needs the `transfer_queue` package (docs/backends/verl.md).
        "trainer.use_v1=true",
        kv("trainer.project_name", "psft-orchestrator"),
        kv("trainer.experiment_name", name),
        kv("trainer.nnodes", nnodes),
        kv("trainer.n_gpus_per_node", n_gpus),
        "trainer.device=cuda",
    ]
