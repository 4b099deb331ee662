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
    import torch
    from omegaconf import OmegaConf
    from tensordict.tensorclass import NonTensorData
    from verl.trainer.sft_trainer import SFTTrainer
    from verl.utils import tensordict_utils as tu
    from verl.utils.tracking import Tracking

    from psft_orchestrator.backends.verl.launch import sum_parts
    from psft_orchestrator.backends.verl.losses import psft_loss_fn, sft_loss_fn

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

        def _old_log_probs(self, mini_batches: list) -> list:
            """θ_old log-probs of each mini-batch (nested, like the engine's log_probs), no grad."""
            old = []
            for mb in mini_batches:
                probe = mb.clone()
                tu.assign_non_tensor(probe, compute_loss=False, calculate_entropy=False)
                out = self.training_client.infer_batch(probe)
                old.append(out["log_probs"])
            return old

        def fit(self):
            is_logging = (
                self.engine.is_mp_src_rank_with_outputs()
                and self.engine.get_data_parallel_rank() == 0
            )
            tracking = None
            if is_logging:
                tracking = Tracking(
                    project_name=self.config.trainer.project_name,
                    experiment_name=self.config.trainer.experiment_name,
                    default_backend=self.config.trainer.logger,
                    config=OmegaConf.to_container(self.config, resolve=True),
                )
            p = self.config.psft
            dp_size = self.engine.get_data_parallel_size()
            k = self.config.data.train_batch_size // int(p.mini_batch_size)
            warmup = int(p.warmup_sft_steps)
            meta_info = {
                "use_remove_padding": self.config.model.use_remove_padding,
                "use_dynamic_bsz": self.config.data.use_dynamic_bsz,
                "max_token_len_per_gpu": self.config.data.max_token_len_per_gpu,
                "micro_batch_size_per_gpu": self.config.data.micro_batch_size_per_gpu,
                "temperature": 1.0,
                "global_batch_size": int(p.mini_batch_size),
                "pad_mode": self.config.data.pad_mode,
                "pad_token_id": self.model_config.tokenizer.pad_token_id,
                "calculate_entropy": True,
            }
            batch_step = self.resume_global_step
            opt_step = batch_step * k
            for epoch in range(
                batch_step // self.steps_per_epoch, self.config.trainer.total_epochs
            ):
                self.train_sampler.set_epoch(epoch=epoch)
                for data in self.train_dataloader:
                    batch_step += 1
                    data = tu.get_tensordict(tensor_dict=data, non_tensor_dict=meta_info)
                    minis = tu.chunk_tensordict(data, k)
                    old: list | None = None
                    for j, mb in enumerate(minis):
                        is_psft = opt_step >= warmup
                        if is_psft and old is None:
                            # θ_old for this and the remaining mini-batches, before their updates
                            old = [None] * j + self._old_log_probs(minis[j:])
                        if is_psft:
                            mb["old_log_probs"] = old[j]
                        seqlens = mb["input_ids"].offsets().diff().tolist()
                        tu.assign_non_tensor(
                            mb, global_token_num=NonTensorData(seqlens), update_lr_scheduler=True
                        )
                        self.training_client.set_loss_fn(
                            loss_fn=self.psft_loss if is_psft else sft_loss_fn
                        )
                        output = self.training_client.train_batch(data=mb)
                        opt_step += 1
                        if is_logging:
                            tracking.log(
                                data=self._metrics(output, seqlens, dp_size), step=opt_step
                            )
                        if opt_step >= self.optimizer_steps:
                            break
                    done = opt_step >= self.optimizer_steps
                    if done or (self.save_freq > 0 and batch_step % self.save_freq == 0):
                        self.ckpt_handler.save_checkpoint(step=batch_step)
                    if done:
                        return

        @staticmethod
        def _metrics(output, seqlens: list[int], dp_size: int) -> dict[str, Any]:
            metrics = tu.get(output, "metrics")
            row = {
                f"train/{k}": metrics[k]
                for k in ("loss", "grad_norm", "lr")
                if metrics.get(k) is not None
            }
            for key, value in metrics.items():
                if key.startswith("train/"):
                    # per-micro-batch (and per-rank) parts of a token mean: their sum is the mean
                    row[key] = sum_parts(value)
            row["train/global_tokens"] = int(torch.tensor(seqlens).sum()) * dp_size
            return row

    return PSFTTrainer


def main() -> None:
    from psft_orchestrator.backends.verl.entry import hydra_entry

    hydra_entry(lambda config: make_trainer_class()(config=config))


if __name__ == "__main__":
    main()
