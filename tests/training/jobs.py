"""A Job builder for the trainers that take a Job (DPO, GRPO), and its metrics reader."""

from __future__ import annotations

import json
from pathlib import Path


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
