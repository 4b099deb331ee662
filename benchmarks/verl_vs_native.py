"""Native vs verl PSFT on the same tiny model, data and seed; prints a comparison table.

    .venv/bin/python benchmarks/verl_vs_native.py [--size micro] [--rows 64] [--steps 8]

verl runs on CPU through the test-only platform plug-in (tests/verl/verl_cpu_platform.py), so
this needs a checkout with tests/. Both runs: same HF model directory, same chat rows, same
PSFTConfig (fp32, constant lr, train batch 16, mini-batch 4 -> θ_old refreshed every 4 steps).
The two backends order the data differently (native: its own length-aware batching; verl:
a DistributedSampler shuffle), so per-step numbers differ; what should agree is the first
mini-batch (loss −1, ppo_kl 0), the scale of the loss and entropy, and the trend.

tokens/s: native = its own trainer's count (all tokens in the forward) over its training time;
verl = the same kind of count from its file logger over the wall time of the whole subprocess
(torchrun start-up and model load included, ~20-30 s here), so verl's figure is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def native(cfg, model: Path, data: Path, root: Path) -> tuple[list[dict], float]:
    from psft_orchestrator.training.loop import train

    t = time.perf_counter()
    train("psft", cfg, model, data, root / "model", root / "ckpt", root / "metrics.jsonl")
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], wall


def verl(cfg, model: Path, data: Path, root: Path) -> tuple[list[dict], float]:
    from psft_orchestrator.backends.verl import run
    from psft_orchestrator.contract import InputRef, Job

    # verl, imported here to validate the config, loads the plug-in at import time as well
    sys.path.insert(0, str(REPO / "tests" / "verl"))
    os.environ.update(
        {
            "VERL_USE_EXTERNAL_MODULES": "verl_cpu_platform",
            "VERL_PLATFORM": "cpu",
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "verl"), str(REPO)]),
        }
    )
    (root / "node").mkdir(parents=True)
    job = Job(
        node_id="bench",
        stage="bench",
        kind="psft",
        backend="verl",
        fingerprint="b" * 64,
        config=cfg.model_dump(),
        inputs={
            "model": InputRef(type="model", path=str(model)),
            "data": InputRef(type="dataset", path=str(data)),
        },
        node_dir=str(root / "node"),
        checkpoint_dir=str(root / "ckpt"),
        output_type="model",
    )
    t = time.perf_counter()
    run(job)
    wall = time.perf_counter() - t
    return [json.loads(x) for x in (root / "node" / "metrics.jsonl").read_text().splitlines()], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="micro")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from psft_orchestrator.configs.training import PSFTConfig
    from psft_orchestrator.data.toy.model import make_tiny_model
    from psft_orchestrator.data.toy.tasks import write_toy_data

    tmp = Path(tempfile.mkdtemp(prefix="verl_vs_native_"))
    model = make_tiny_model(tmp / "model", size=args.size, seed=0)
    data = write_toy_data("math_sft", args.rows, 0, tmp / "data.jsonl")
    cfg = PSFTConfig(
        lr=1e-4,
        train_batch_size=16,
        mini_batch_size=4,
        micro_batch_size=4,
        max_length=512,
        max_steps=args.steps,
        dtype="float32",
        lr_scheduler="constant",
        seed=1,
        clipped_tokens_every=0,
    )
    results = {
        "native": native(cfg, model, data, tmp / "native"),
        "verl": verl(cfg, model, data, tmp / "verl"),
    }

    print(
        f"\nPSFT, toy {args.size} model, {args.rows} rows of math_sft, {args.steps} optimizer steps "
        f"(train batch 16, mini-batch 4, lr 1e-4, fp32, CPU)\n"
    )
    print(
        f"{'backend':8} {'step1 loss':>10} {'step1 kl':>9} {'final loss':>11} {'final ent':>10} "
        f"{'mean clipfrac':>13} {'tokens':>7} {'wall s':>7} {'tokens/s':>9}"
    )
    for name, (rows, wall) in results.items():
        tokens = sum(r.get("tokens", 0) for r in rows)
        train_s = wall
        if name == "native" and rows and "tokens_per_s" in rows[-1]:
            # the native trainer's own timing excludes model load
            train_s = sum(r["tokens"] / r["tokens_per_s"] for r in rows if r.get("tokens_per_s"))
        clip = sum(r.get("clipfrac", 0.0) for r in rows) / max(len(rows), 1)
        print(
            f"{name:8} {rows[0]['loss']:10.4f} {rows[0].get('ppo_kl', float('nan')):9.2e} {rows[-1]['loss']:11.4f} "
            f"{rows[-1].get('entropy', float('nan')):10.4f} {clip:13.4f} {tokens:7d} {wall:7.1f} "
            f"{tokens / max(train_s, 1e-9):9.0f}"
        )
    print(f"\nfiles under {tmp}")


if __name__ == "__main__":
    main()
