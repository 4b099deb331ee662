"""Hyperparameters of the training stages, as typed pydantic models.

These models are the single definition of every training knob: the spec schema
(`psft_orchestrator.spec.schema`) inherits them as stage fields, and the trainers read them.
Defaults follow the PSFT paper (see `shared/reference/methods.md`); presets under `stages/`
set the per-experiment values (Tables 6-9).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from psft_orchestrator.configs.evals import Suite
from psft_orchestrator.identity import param, setting

LossAgg = Literal[
    "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
]


class Strict(BaseModel):
    """Base for every spec-facing model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KLConfig(Strict):
    """SFT-KL: adds `coef * mean_t k(logp_t, ref_t)` against the frozen initial model."""

    coef: float = Field(0.5, ge=0.0, le=100.0, description="β, the KL coefficient (paper: 0.5).")
    estimator: Literal["k1", "k2", "k3"] = Field(
        "k3", description="KL estimator: k1 = logp-ref, k2 = ½(logp-ref)², k3 = verl's low_var_kl."
    )


class OptimConfig(Strict):
    """Optimiser and schedule (AdamW)."""

    lr: float = param(2e-5, gt=0.0, le=1.0, description="Peak learning rate.")
    weight_decay: float = param(0.1, ge=0.0, le=1.0, description="AdamW weight decay.")
    betas: tuple[float, float] = param((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = param(1.0, gt=0.0, description="Clip the global grad norm at this value.")
    lr_scheduler: Literal["constant", "cosine", "linear"] = param(
        "cosine", description="Schedule after warm-up."
    )
    warmup_ratio: float = param(
        0.0, ge=0.0, lt=1.0, description="Fraction of steps of linear lr warm-up."
    )
    min_lr_ratio: float = param(
        0.0, ge=0.0, le=1.0, description="Floor of the cosine schedule, as a fraction of lr."
    )


class TrainConfig(OptimConfig):
    """Fields shared by every gradient-based stage (pretrain, SFT family, DPO, GRPO).

    Batching follows the paper: a *train batch* of `train_batch_size` sequences is split into
    mini-batches of `mini_batch_size`, one optimizer step each; each mini-batch is processed in
    micro-batches of `micro_batch_size` (gradient accumulation, bounds memory only).
    """

    epochs: float = param(1.0, gt=0.0, le=1000.0, description="Passes over the training data.")
    max_steps: int | None = param(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    train_batch_size: int = param(256, ge=1, le=1_000_000, description="Sequences per train batch.")
    mini_batch_size: int | None = param(
        None,
        ge=1,
        description="Sequences per optimizer step; default = train_batch_size (one step per batch).",
    )
    micro_batch_size: int = param(
        4, ge=1, le=4096, description="Sequences per forward pass (grad accumulation)."
    )
    max_length: int = param(
        8192, ge=8, le=1_000_000, description="Token cutoff for prompt + response."
    )
    truncation: Literal["drop", "truncate"] = param(
        "drop",
        description="Examples longer than max_length: drop them, or cut the response (counted either way).",
    )
    loss_agg_mode: LossAgg = param(
        "token-mean", description="How token losses are reduced (verl's names)."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = param(
        "auto", description="Training dtype; auto = bf16 where the device supports it, else fp32."
    )
    seed: int = param(1, ge=0, description="Seed for init, data order and sampling.")
    save_every: int = setting(
        0, ge=0, description="Save a resumable checkpoint every N steps (0 = only at the end)."
    )
    log_every: int = setting(1, ge=1, description="Append a metrics row every N optimizer steps.")
    freeze: list[str] = param(
        default_factory=list,
        description="Regexes of parameter names to freeze (e.g. vision tower for VLMs).",
    )

    @model_validator(mode="after")
    def _check_batches(self) -> TrainConfig:
        mini = self.mini_batch_size or self.train_batch_size
        if mini > self.train_batch_size or self.train_batch_size % mini:
            raise ValueError(
                f"mini_batch_size ({mini}) must divide train_batch_size ({self.train_batch_size})"
            )
        if self.micro_batch_size > mini:
            self.micro_batch_size = mini
        return self


class SFTFamilyConfig(TrainConfig):
    """Fields of the supervised objectives (SFT, SFT-KL, PSFT, DFT, iw-SFT) on top of TrainConfig."""

    eval_every: int = setting(
        0, ge=0, description="Evaluate eval_suites every N optimizer steps (0 = never)."
    )
    eval_suites: list[Suite] = param(
        default_factory=list,
        description="Suites for intermediate evaluation during training (score vs step, Figs. 2-3).",
    )


class SFTConfig(SFTFamilyConfig):
    """Plain SFT (token-mean cross-entropy on response tokens); with `kl:` it is SFT-KL."""

    kl: KLConfig | None = param(
        None, description="Add a KL term to the frozen initial model (SFT-KL)."
    )


class PSFTConfig(SFTFamilyConfig):
    """Proximal SFT: PPO's clipped surrogate with advantage 1 on every demonstrated token."""

    lr: float = param(1e-6, gt=0.0, le=1.0, description="Peak learning rate (paper: 1e-6).")
    mini_batch_size: int | None = param(
        32, ge=1, description="Sequences per optimizer step (paper: 32)."
    )
    clip_low: float = param(
        0.2, ge=0.0, le=1.0, description="ε_low (never binds with advantage +1)."
    )
    clip_high: float = param(
        0.28, ge=0.0, le=10.0, description="ε_high: tokens with ratio > 1+ε_high get no gradient."
    )
    old_policy: Literal["per_batch", "initial"] = param(
        "per_batch",
        description="θ_old: refreshed at every train batch (paper default), or the frozen initial model ('no update' ablation).",
    )
    warmup_sft_steps: int = param(
        0, ge=0, description="Plain SFT optimizer steps before PSFT starts (PSFT_warm-up)."
    )
    entropy_top_frac: float | None = param(
        None,
        gt=0.0,
        le=1.0,
        description="PSFT-Ent: train only on this top fraction of tokens by entropy.",
    )
    clipped_tokens_every: int = setting(
        50, ge=0, description="Record the most-clipped tokens every N steps (0 = never)."
    )


class DFTConfig(SFTFamilyConfig):
    """Dynamic Fine-Tuning: token CE weighted by the detached token probability."""

    lr: float = param(5e-5, gt=0.0, le=1.0, description="Peak learning rate (DFT paper: 5e-5).")


class IWSFTConfig(SFTFamilyConfig):
    """Importance-weighted SFT against the frozen initial model."""

    level: Literal["sequence", "token"] = param(
        "sequence", description="One weight per sequence, or per token."
    )
    weight_clip: tuple[float, float] | None = param(
        None,
        description="Clamp range of the weights; default (0, 16) for sequence, (0.2, 1.8) for token.",
    )


class PretrainConfig(TrainConfig):
    """Causal-LM pretraining from scratch on a text corpus (toy world only)."""

    lr: float = param(3e-3, gt=0.0, le=1.0, description="Peak learning rate.")
    train_batch_size: int = param(32, ge=1, description="Sequences per optimizer step.")
    max_length: int = param(256, ge=8, le=1_000_000, description="Sequence length.")
    warmup_ratio: float = param(
        0.05, ge=0.0, lt=1.0, description="Fraction of steps of linear lr warm-up."
    )


class DPOConfig(TrainConfig):
    """Direct Preference Optimization against the frozen initial model."""

    lr: float = param(5e-7, gt=0.0, le=1.0, description="Peak learning rate (paper: 5e-7).")
    train_batch_size: int = param(
        64, ge=1, description="Preference pairs per optimizer step (paper: 64)."
    )
    beta: float = param(0.01, gt=0.0, le=100.0, description="DPO β (paper: 0.01).")
    loss_type: Literal["sigmoid"] = param("sigmoid", description="DPO loss variant.")
    finetuning_type: Literal["full", "lora"] = param(
        "full", description="Full fine-tuning or LoRA (merged at the end)."
    )
    lora_rank: int = param(8, ge=1, le=1024, description="LoRA rank when finetuning_type is lora.")
    max_length: int = param(4096, ge=8, le=1_000_000, description="Token cutoff (paper: 4k).")


class GRPOConfig(TrainConfig):
    """GRPO with the DAPO techniques (clip-higher, overlong shaping, dynamic sampling)."""

    lr: float = param(1e-6, gt=0.0, le=1.0, description="Peak learning rate (paper: 1e-6).")
    weight_decay: float = param(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    lr_scheduler: Literal["constant", "cosine", "linear"] = param(
        "constant", description="Schedule after warm-up."
    )
    mini_batch_size: int | None = param(
        32, ge=1, description="Prompts per optimizer step (paper: 32)."
    )
    rollout_n: int = param(8, ge=1, le=1024, description="Samples per prompt (the group size).")
    temperature: float = param(
        1.0, gt=0.0, le=5.0, description="Sampling temperature of the rollouts."
    )
    top_p: float = param(1.0, gt=0.0, le=1.0, description="Nucleus sampling of the rollouts.")
    max_prompt_length: int = param(2048, ge=8, description="Prompt token cutoff.")
    max_response_length: int = param(10240, ge=8, description="Response token cutoff.")
    clip_low: float = param(0.2, ge=0.0, le=1.0, description="ε_low.")
    clip_high: float = param(0.28, ge=0.0, le=10.0, description="ε_high (clip-higher).")
    kl_coef: float = param(0.0, ge=0.0, description="KL loss coefficient (paper: 0).")
    overlong_buffer: int = param(
        2048, ge=0, description="Linear length penalty over this many tokens before the max."
    )
    overlong_penalty: float = param(1.0, ge=0.0, description="Penalty at the max length.")
    dynamic_sampling: bool = param(True, description="Drop groups whose rewards are all equal.")
    format_reward: float = param(
        0.0, ge=0.0, le=1.0, description="Extra reward for a well-formed \\boxed{} answer."
    )
    total_steps: int = param(100, ge=1, description="RL steps (rollout batches).")
