"""Shared `main` of our torchrun entry points: Hydra over verl's own SFT config tree, then fit().

Mirrors `verl.trainer.sft_trainer.main` / `run_sft` (process group, device auto-set, teardown);
only the trainer class differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psft_orchestrator.backends.verl.validate import verl_config_dir


def hydra_entry(make_trainer: Callable[[Any], Any]) -> None:
    import hydra

    @hydra.main(
        config_path=str(verl_config_dir()), config_name="sft_trainer_engine", version_base=None
    )
    def _main(config: Any) -> None:
        from verl.utils.device import auto_set_device
        from verl.utils.distributed import (
            destroy_global_process_group,
            initialize_global_process_group,
        )

        auto_set_device(config)
        initialize_global_process_group()
        make_trainer(config).fit()
        destroy_global_process_group()

    _main()
