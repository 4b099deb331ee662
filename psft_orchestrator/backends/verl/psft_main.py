"""PSFT on verl's training worker, no rollout engine:
`torchrun ... -m psft_orchestrator.backends.verl.psft_main <overrides>` (verl's SFT config + `psft.*`).

The PSFT authors ran PSFT as a PPO recipe whose "rollout" returned the demonstration. Here the
same objective is built directly on the pieces verl's SFT trainer already has (data pipeline,
`TrainingWorker` + FSDP engine, checkpoints, resume, file logger), per train batch:

  1. split the train batch into mini-batches (`psft.mini_batch_size`);
  2. θ_old: one forward-only pass (`TrainingWorker.infer_batch`) over the mini-batches, before
     any update of this train batch, keeping the per-token log-probs;
  3. one optimizer step per mini-batch (`TrainingWorker.train_batch`) with our PSFT loss
     (`losses.psft_loss_fn`: PPO's clipped surrogate with advantage 1 on the loss mask),
     the lr scheduler stepping once per optimizer step.

The first `psft.warmup_sft_steps` optimizer steps are plain SFT; θ_old is then taken at the first
PSFT step (which therefore has ratio 1), as in the native trainer. Metrics are logged per
optimizer step under verl's file logger: loss, grad_norm, lr, entropy, clipfrac,
clipfrac_lower, ppo_kl, ce (plain cross-entropy). Checkpoints are per train batch.
"""

from __future__ import annotations

from functools import partial
from typing import Any


def make_trainer_class():
    from verl.trainer.sft_trainer import SFTTrainer

    from psft_orchestrator.backends.verl.losses import psft_loss_fn

    class PSFTTrainer(SFTTrainer):
        def _build_engine(self):
            super()._build_engine()
            p = self.config.psft
            self.psft_loss = partial(
                psft_loss_fn, clip_low=float(p.clip_low), clip_high=float(p.clip_high)
            )
            self.training_client.set_loss_fn(loss_fn=self.psft_loss)

        def _init_engine(self):
            # As SFTTrainer._init_engine, except that the lr schedule spans optimizer steps
            # (k per train batch), not train batches.
            self.steps_per_epoch = len(self.train_dataloader)
            self.total_training_steps = (
                self.config.trainer.total_training_steps
                or self.steps_per_epoch * self.config.trainer.total_epochs
            )
            self.optimizer_steps = int(self.config.psft.optimizer_steps)
            self.optimizer_config.total_training_steps = self.optimizer_steps
            self.save_freq = self.config.trainer.save_freq
            self.test_freq = self.config.trainer.test_freq
            self.training_client.reset()

        def fit(self):
            fit(self)

    return PSFTTrainer


def fit(trainer: Any) -> None:
    """The training loop: per train batch, k mini-batch optimizer steps (see the module doc);
    a checkpoint every `save_freq` train batches and at the end."""
    from verl.utils import tensordict_utils as tu

    tracking = open_tracking(trainer)
    k = trainer.config.data.train_batch_size // int(trainer.config.psft.mini_batch_size)
    batch_step = trainer.resume_global_step
    opt_step = batch_step * k
    first_epoch = batch_step // trainer.steps_per_epoch
    for epoch in range(first_epoch, trainer.config.trainer.total_epochs):
        trainer.train_sampler.set_epoch(epoch=epoch)
        for data in trainer.train_dataloader:
            batch_step += 1
            data = tu.get_tensordict(tensor_dict=data, non_tensor_dict=meta_info(trainer))
            opt_step = train_mini_batches(trainer, tu.chunk_tensordict(data, k), opt_step, tracking)
            done = opt_step >= trainer.optimizer_steps
            if done or (trainer.save_freq > 0 and batch_step % trainer.save_freq == 0):
                trainer.ckpt_handler.save_checkpoint(step=batch_step)
            if done:
                return


def train_mini_batches(trainer: Any, minis: list, opt_step: int, tracking: Any) -> int:
    """One optimizer step per mini-batch, SFT until `warmup_sft_steps`, then PSFT against θ_old
    taken before the first PSFT update of this train batch; returns the optimizer step."""
    from tensordict.tensorclass import NonTensorData
    from verl.utils import tensordict_utils as tu

    from psft_orchestrator.backends.verl.losses import sft_loss_fn

    warmup = int(trainer.config.psft.warmup_sft_steps)
    dp_size = trainer.engine.get_data_parallel_size()
    old: list | None = None
    for j, mb in enumerate(minis):
        is_psft = opt_step >= warmup
        if is_psft and old is None:
            # θ_old for this and the remaining mini-batches, before their updates
            old = [None] * j + old_log_probs(trainer.training_client, minis[j:])
        if is_psft:
            mb["old_log_probs"] = old[j]
        seqlens = mb["input_ids"].offsets().diff().tolist()
        tu.assign_non_tensor(mb, global_token_num=NonTensorData(seqlens), update_lr_scheduler=True)
        trainer.training_client.set_loss_fn(loss_fn=trainer.psft_loss if is_psft else sft_loss_fn)
        output = trainer.training_client.train_batch(data=mb)
        opt_step += 1
        if tracking is not None:
            tracking.log(data=step_metrics(output, seqlens, dp_size), step=opt_step)
        if opt_step >= trainer.optimizer_steps:
            break
    return opt_step


def old_log_probs(training_client: Any, mini_batches: list) -> list:
    """θ_old log-probs of each mini-batch (nested, like the engine's log_probs), no grad."""
    from verl.utils import tensordict_utils as tu

    old = []
    for mb in mini_batches:
        probe = mb.clone()
        tu.assign_non_tensor(probe, compute_loss=False, calculate_entropy=False)
        old.append(training_client.infer_batch(probe)["log_probs"])
    return old


def open_tracking(trainer: Any) -> Any:
    """verl's metric logger on the rank that logs, else None."""
    from omegaconf import OmegaConf
    from verl.utils.tracking import Tracking

    engine = trainer.engine
    if not (engine.is_mp_src_rank_with_outputs() and engine.get_data_parallel_rank() == 0):
        return None
    return Tracking(
        project_name=trainer.config.trainer.project_name,
        experiment_name=trainer.config.trainer.experiment_name,
        default_backend=trainer.config.trainer.logger,
        config=OmegaConf.to_container(trainer.config, resolve=True),
    )


def meta_info(trainer: Any) -> dict[str, Any]:
    """The engine's per-batch flags; the global batch is one mini-batch (one optimizer step)."""
    config = trainer.config
    return {
        "use_remove_padding": config.model.use_remove_padding,
        "use_dynamic_bsz": config.data.use_dynamic_bsz,
        "max_token_len_per_gpu": config.data.max_token_len_per_gpu,
        "micro_batch_size_per_gpu": config.data.micro_batch_size_per_gpu,
        "temperature": 1.0,
        "global_batch_size": int(config.psft.mini_batch_size),
        "pad_mode": config.data.pad_mode,
        "pad_token_id": trainer.model_config.tokenizer.pad_token_id,
        "calculate_entropy": True,
    }


def step_metrics(output: Any, seqlens: list[int], dp_size: int) -> dict[str, Any]:
    import torch
    from verl.utils import tensordict_utils as tu

    from psft_orchestrator.backends.verl.launch import sum_parts

    metrics = tu.get(output, "metrics")
    row = {
        f"train/{k}": metrics[k] for k in ("loss", "grad_norm", "lr") if metrics.get(k) is not None
    }
    for key, value in metrics.items():
        if key.startswith("train/"):
            # per-micro-batch (and per-rank) parts of a token mean: their sum is the mean
            row[key] = sum_parts(value)
    row["train/global_tokens"] = int(torch.tensor(seqlens).sum()) * dp_size
    return row


def main() -> None:
    from psft_orchestrator.backends.verl.entry import hydra_entry

    hydra_entry(lambda config: make_trainer_class()(config=config))


if __name__ == "__main__":
    main()
