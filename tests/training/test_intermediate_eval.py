"""Intermediate evaluation during training: scores at steps, through the native backend."""

from __future__ import annotations

import json
from pathlib import Path

from psft_orchestrator.backends import native
from psft_orchestrator.contract import InputRef, Job
from psft_orchestrator.data.toy.tasks import write_toy_data


def test_scores_every_n_steps_land_in_scores_json(
    tmp_path: Path, micro_model: Path, reverse_data: Path
):
    data = reverse_data
    bench = write_toy_data("math_bench", 4, 0, tmp_path / "b.jsonl")
    node = tmp_path / "node"
    (node / "outputs").mkdir(parents=True)
    job = Job(
        node_id="train",
        stage="train",
        kind="sft",
        backend="native",
        fingerprint="0" * 64,
        config={
            "lr": 1e-3,
            "train_batch_size": 8,
            "micro_batch_size": 8,
            "max_steps": 4,
            "max_length": 128,
            "eval_every": 2,
            "eval_suites": [
                {
                    "type": "math",
                    "benchmarks": ["toy_math"],
                    "k": 1,
                    "temperature": 0.0,
                    "max_new_tokens": 8,
                    "batch_size": 4,
                }
            ],
        },
        inputs={
            "model": InputRef(type="model", path=str(micro_model)),
            "data": InputRef(type="dataset", path=str(data)),
            "benchmarks": [InputRef(type="benchmark", path=str(bench), name="toy_math")],
        },
        node_dir=str(node),
        checkpoint_dir=str(tmp_path / "ckpt"),
        output_type="model",
    )
    native.run(job)
    rows = json.loads((node / "outputs" / "scores.json").read_text())
    assert sorted({r["step"] for r in rows}) == [2, 4]
    assert {(r["benchmark"], r["metric"]) for r in rows} == {
        ("toy_math", "avg@1"),
        ("toy_math", "pass@1"),
    }
    assert all(r["n"] == 4 and 0 <= r["value"] <= 100 for r in rows)
    assert (node / "outputs" / "model" / "config.json").exists()
