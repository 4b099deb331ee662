"""Fixtures for the preference/RL tests: the toy micro model, toy preference pairs, a Job builder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_job(
    root: Path, kind: str, backend: str, model: Path, data: Path, data_type: str, **config
) -> Job:  # noqa: F821
    """A Job whose node and checkpoint directories live under `root` (as the run layer would make them)."""
    from psft_orchestrator.contract import InputRef, Job

    node = root / "node"
    node.mkdir(parents=True, exist_ok=True)
    return Job(
        node_id=kind,
        stage=kind,
        kind=kind,
        backend=backend,
        fingerprint="0" * 64,
        config=config,
        inputs={
            "model": InputRef(type="model", path=str(model)),
            "data": InputRef(type=data_type, path=str(data)),
        },
        node_dir=str(node),
        checkpoint_dir=str(root / "ckpt"),
        output_type="model",
    )


def read_metrics(job) -> list[dict]:
    return [json.loads(ln) for ln in (job.out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    from psft_orchestrator.data.toy.tasks import write_toy_data

    return write_toy_data("preference", 16, 0, tmp_path_factory.mktemp("pairs") / "pairs.jsonl")
