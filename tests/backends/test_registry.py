"""The backend registry is the one list of backends: it matches the modules, and the schema
offers exactly its entries."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from pydantic import ValidationError

import psft_orchestrator.backends as backends
from psft_orchestrator.configs.registry import REGISTRY, TEST_ONLY, backends_for
from psft_orchestrator.configs.stages import STAGE_MODELS
from psft_orchestrator.spec.schema import BACKENDS

NOT_BACKENDS = {"worker"}  # the subprocess entry point


def test_every_registered_backend_has_a_module_and_every_module_is_registered() -> None:
    modules = {m.name for m in pkgutil.iter_modules(backends.__path__)} - NOT_BACKENDS
    assert modules == set(REGISTRY) | set(TEST_ONLY)
    for name in modules:
        assert callable(importlib.import_module(f"psft_orchestrator.backends.{name}").run), name


def test_schema_choices_come_from_the_registry() -> None:
    assert set(BACKENDS) == set(STAGE_MODELS)
    for kind, choices in BACKENDS.items():
        assert choices == backends_for(kind) and choices[0] == "native", kind
    sft = STAGE_MODELS["sft"]
    assert sft(name="t", kind="sft", backend="verl").backend == "verl"
    assert "vllm" in BACKENDS["eval"] and "vllm" not in BACKENDS["sft"]
    with pytest.raises(ValidationError):
        sft(name="t", kind="sft", backend="deepspeed")  # named nowhere in the registry


def test_config_for_rejects_a_key_the_backend_would_ignore() -> None:
    from psft_orchestrator.configs.stages import EvalStage, StageBase
    from psft_orchestrator.configs.training import GRPOConfig, PSFTConfig, TrainConfig
    from psft_orchestrator.contract import STAGE_KEYS, Job, config_for

    assert set(StageBase.model_fields) | {"benchmarks"} == STAGE_KEYS
    assert set(EvalStage.model_fields) - set(StageBase.model_fields) == {"suites", "benchmarks"}

    def job(kind: str, **config) -> Job:
        stage = STAGE_MODELS[kind](name="t", kind=kind, **config)
        return Job(
            node_id="t",
            stage="t",
            kind=kind,
            backend="native",
            fingerprint="f" * 64,
            config=stage.model_dump(mode="json", by_alias=True),
            node_dir="/nonexistent",
            checkpoint_dir="/nonexistent",
            output_type="model",
        )

    assert config_for(job("psft", lr=3e-6), PSFTConfig).lr == 3e-6
    assert config_for(job("grpo"), GRPOConfig).lr == GRPOConfig().lr  # reward: None is no key
    with pytest.raises(ValueError, match="has no field 'reward'"):
        config_for(job("grpo", reward={"path": "r.py"}), GRPOConfig)
    with pytest.raises(ValueError, match="has no field 'clip_high'"):
        config_for(job("psft"), TrainConfig)  # a PSFT field the generic model lacks
