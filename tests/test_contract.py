"""The Job's config is typed by its stage kind and survives job.json unchanged."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from psft_orchestrator.configs.stages import DPOStage, EvalStage, PSFTStage
from psft_orchestrator.contract import Job


def _job(kind: str, config: dict) -> Job:
    return Job(
        node_id="n",
        stage="s",
        kind=kind,
        backend="native",
        fingerprint="f" * 64,
        config=config,
        node_dir="/nonexistent",
        checkpoint_dir="/nonexistent",
        output_type="model",
    )


def test_config_is_the_stage_model_of_its_kind(tmp_path) -> None:
    job = _job("psft", {"lr": 3e-6, "clip_low": 0.1, "model": {"from": "sft"}})
    assert isinstance(job.config, PSFTStage)
    assert job.config.lr == 3e-6 and job.config.name == "s"
    assert job.config_data()["model"] == {"from": "sft", "where": {}}  # the spec's alias

    job.save(tmp_path / "job.json")
    again = Job.load(tmp_path / "job.json")
    assert again.config == job.config and isinstance(again.config, PSFTStage)

    assert isinstance(_job("dpo", {"beta": 0.1}).config, DPOStage)
    suite = {"type": "math", "name": "m", "benchmarks": ["b"]}
    assert isinstance(_job("eval", {"suites": [suite]}).config, EvalStage)


def test_a_field_of_another_kind_or_a_mismatched_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="clip_low"):
        _job("sft", {"clip_low": 0.1})  # a PSFT field on an SFT job
    with pytest.raises(ValidationError, match="config kind 'dpo' != job kind 'sft'"):
        _job("sft", {"kind": "dpo"})
