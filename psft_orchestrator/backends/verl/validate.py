"""Compose a rendered override list against verl's own config tree and check it, before anything runs.

`compose(kind, overrides)` is what `hydra.main` would build inside verl's entry point (same config
directory, same config name, same override grammar), so a misspelt or unknown key fails here with
Hydra's message naming it. `check(kind, composed)` then runs verl's own checks:

    grpo           verl.utils.config.validate_config (what main_ppo runs first)
    sft/dft/psft   the dataclass conversions SFTTrainer._build_config does (engine, optim,
                   checkpoint), which carry verl's asserts (e.g. lr_scheduler_type)

The model config is not converted: verl's HFModelConfig loads the model's files, which may not
exist yet at plan time. Importing `verl` pulls in torch; `hydra` itself is light.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from psft_orchestrator.backends.verl.render import CONFIG_NAMES


class VerlConfigError(ValueError):
    """verl's config tree rejected a rendered config; the message names the key."""


def verl_config_dir() -> Path:
    """verl/trainer/config of the installed verl, found without importing verl (which imports torch)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise VerlConfigError("verl is not installed in this interpreter (pip install verl==0.9.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"


def compose(kind: str, overrides: list[str]) -> Any:
    """The DictConfig verl's entry point would receive for these overrides (interpolations unresolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
            return hydra_compose(config_name=CONFIG_NAMES[kind], overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise VerlConfigError(f"verl rejected the {kind} config: {e}") from None


def check(kind: str, config: Any) -> None:
    """Run verl's own validation of a composed config; raise VerlConfigError naming the section."""
    # verl reads these at import time; keep a plan-time check from starting wandb or plug-in hunts.
    os.environ.setdefault("VERL_USE_EXTERNAL_PLUGINS", "none")
    from omegaconf import OmegaConf

    try:
        OmegaConf.resolve(config)  # interpolation errors (${...} to a missing key) surface here
    except Exception as e:
        raise VerlConfigError(f"verl {kind} config does not resolve: {e}") from None

    from verl.utils.config import omega_conf_to_dataclass

    if kind == "grpo":
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config

        try:
            validate_config(
                config,
                use_reference_policy=need_reference_policy(config),
                use_critic=need_critic(config),
            )
        except Exception as e:
            raise VerlConfigError(
                f"verl validate_config rejected the grpo config: {type(e).__name__}: {e}"
            ) from None
        return
    for section in ("engine", "optim", "checkpoint"):
        try:
            omega_conf_to_dataclass(config[section])
        except Exception as e:
            raise VerlConfigError(
                f"verl rejected `{section}` of the {kind} config: {type(e).__name__}: {e}"
            ) from None


def to_yaml(config: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(config)
