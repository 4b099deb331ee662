"""DFT on verl's SFT trainer: `torchrun ... -m psft_orchestrator.backends.verl.dft_main <overrides>`.

verl's `SFTTrainer._build_engine` hands its training worker `verl.workers.utils.losses.sft_loss`;
that one call is the extension point. This trainer swaps in our DFT loss (`losses.dft_loss_fn`)
and asks the engine for token entropies, and is otherwise verl's trainer, unchanged: same data
pipeline, engine, checkpoints, resume and file logger. Same Hydra config as verl's SFT trainer.
"""

from __future__ import annotations

from typing import Any


def with_entropy(training_client: Any) -> None:
    """Make every `train_batch` also return token entropies (logged as train/entropy).

    verl's SFT `fit()` builds the batch's flags itself, so the flag is added on the way in.
    """
    from verl.utils import tensordict_utils as tu

    inner = training_client.train_batch

    def train_batch(data):
        tu.assign_non_tensor(data, calculate_entropy=True)
        return inner(data)

    training_client.train_batch = train_batch


def make_trainer_class():
    from verl.trainer.sft_trainer import SFTTrainer

    from psft_orchestrator.backends.verl.losses import dft_loss_fn

    class DFTTrainer(SFTTrainer):
        def _build_engine(self):
            super()._build_engine()
            self.loss_fn = dft_loss_fn
            self.training_client.set_loss_fn(loss_fn=dft_loss_fn)
            with_entropy(self.training_client)

    return DFTTrainer


def main() -> None:
    from psft_orchestrator.backends.verl.entry import hydra_entry

    hydra_entry(lambda config: make_trainer_class()(config=config))


if __name__ == "__main__":
    main()
