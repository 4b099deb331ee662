"""Write synthetic node directories and run records, exactly as the run layer lays them out.

Used by tests/results and benchmarks/results.py; handy for trying a new table definition
without running anything. The manifest goes through `contract.Manifest`, the same model the run
layer writes and ingest reads, so it cannot drift from theirs:

    write_node(ws, stage="eval", kind="eval", labels={"method": "PSFT", "model": "toy", "seed": 1},
               scores=[{"suite": "math", "benchmark": "toy_math", "metric": "avg@4", "value": 41.0}])
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from psft_orchestrator.contract import Manifest, ParentRef


def fingerprint_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def write_node(
    workspace: str | Path,
    *,
    stage: str,
    kind: str,
    labels: dict[str, Any] | None = None,
    node_id: str | None = None,
    spec_name: str = "demo",
    run_id: str = "demo-00000000-20261122T131500",
    config: dict[str, Any] | None = None,
    parents: list[tuple[str, str]] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    scores: list[dict[str, Any]] | None = None,
    clipped_tokens: list[dict[str, Any]] | None = None,
    fingerprint: str | None = None,
    backend: str = "native",
    backend_version: str | None = None,
    input_hashes: dict[str, str | list[str]] | None = None,
) -> tuple[str, Path]:
    """Create `<workspace>/artifacts/<stage>/<fp16>/` with manifest, metrics and scores."""
    labels = dict(labels or {})
    if node_id is None:
        inner = ",".join(f"{k}={v}" for k, v in labels.items())
        node_id = f"{stage}[{inner}]" if inner else stage
    fp = fingerprint or fingerprint_of(spec_name, node_id, config, parents)
    node_dir = Path(workspace) / "artifacts" / stage / fp[:16]
    (node_dir / "outputs").mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        node_id=node_id,
        stage=stage,
        kind=kind,
        backend=backend,
        fingerprint=fp,
        run_id=run_id,
        spec_name=spec_name,
        spec_path=f"specs/{spec_name}.yaml",
        labels=labels,
        config=config or {},
        parents=[
            ParentRef(slot="model", node_id=nid, fingerprint=pfp) for pfp, nid in parents or []
        ],
        inputs={},
        input_hashes=input_hashes or {},
        output_type="eval" if kind == "eval" else "model",
        versions={
            "psft_orchestrator": "0.1.0",
            "python": "3.11.7",
            "backend": backend_version or f"{backend}-1",
        },
        host="testhost",
        started_at="2026-11-22T13:15:00+00:00",
        ended_at="2026-11-22T13:16:00+00:00",
        duration_s=60.0,
        status="success",
        attempt=1,
    )
    (node_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    if metrics is not None:
        with (node_dir / "metrics.jsonl").open("w") as f:
            for row in metrics:
                f.write(json.dumps(row) + "\n")
    if scores is not None:
        rows = [{"n": 0, "stderr": None, "step": None, **s} for s in scores]
        (node_dir / "outputs" / "scores.json").write_text(json.dumps(rows))
    if clipped_tokens is not None:
        with (node_dir / "clipped_tokens.jsonl").open("w") as f:
            for row in clipped_tokens:
                f.write(json.dumps(row) + "\n")
    (node_dir / "_SUCCESS").write_text("")
    return fp, node_dir


def write_run_record(
    workspace: str | Path,
    run_id: str,
    spec_name: str,
    nodes: list[dict[str, Any]],
    status: str = "success",
) -> Path:
    """`<workspace>/runs/<run_id>.json`; `nodes` items: node_id, stage, fingerprint, status..."""
    path = Path(workspace) / "runs" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "run_id": run_id,
        "spec_name": spec_name,
        "spec_path": f"specs/{spec_name}.yaml",
        "started_at": "2026-11-22T13:15:00+00:00",
        "ended_at": "2026-11-22T13:20:00+00:00",
        "status": status,
        "nodes": [
            {
                "cached": False,
                "duration_s": 1.0,
                "error": None,
                "log": None,
                "status": "success",
                **n,
            }
            for n in nodes
        ],
    }
    path.write_text(json.dumps(record, indent=2))
    return path


# --- a small ready-made workspace (tests, docs examples) -------------------------------------

METHODS = ["SFT", "PSFT"]
SEEDS = [1, 2]
BENCHES = ["toy_math", "toy_ood_format", "toy_ood_copy"]


def score_of(method: str, seed: int, bench: str) -> float:
    """A deterministic, distinct score per cell so averages are checkable."""
    return 10.0 * (METHODS.index(method) + 1) + seed + BENCHES.index(bench) * 0.25


def toy_workspace(ws: Path) -> Path:
    """A small finished run: two methods x two seeds, train node (metrics, clipped tokens) ->
    eval node (final and intermediate scores), one DPO node, one failed node in the run record."""
    ws = Path(ws)
    run_nodes = []
    for method in METHODS:
        for seed in SEEDS:
            labels = {"method": method, "model": "toy", "seed": seed}
            metrics = []
            for step in range(1, 21):
                row = {
                    "step": step,
                    "loss": 2.0 / step,
                    "entropy": 1.0 + (0.5 if method == "PSFT" else -0.02 * step),
                    "grad_norm": 1.0,
                    "lr": 1e-5,
                }
                if method == "PSFT":
                    row["clipfrac"] = 0.01 * step
                metrics.append(row)
            tfp, _ = write_node(
                ws,
                stage="train",
                kind=method.lower(),
                labels=labels,
                metrics=metrics,
                clipped_tokens=[
                    {"step": 1, "clipped_tokens": [["wait", 5], ["so", 2]]},
                    {"step": 2, "clipped_tokens": [["wait", 3], ["alternatively", 4]]},
                ]
                if method == "PSFT"
                else None,
            )
            scores = [
                {
                    "suite": "toy",
                    "benchmark": b,
                    "metric": "avg@4",
                    "value": score_of(method, seed, b),
                    "n": 50,
                }
                for b in BENCHES
            ]
            scores += [
                {
                    "suite": "toy",
                    "benchmark": "toy_math",
                    "metric": "avg@4",
                    "value": float(s),
                    "step": s,
                }
                for s in (5, 10, 15)
            ]
            efp, _ = write_node(
                ws,
                stage="eval",
                kind="eval",
                labels=labels,
                parents=[(tfp, "train")],
                scores=scores,
            )
            run_nodes += [
                {"node_id": f"train[{method},{seed}]", "stage": "train", "fingerprint": tfp},
                {"node_id": f"eval[{method},{seed}]", "stage": "eval", "fingerprint": efp},
            ]
    dfp, _ = write_node(
        ws,
        stage="dpo",
        kind="dpo",
        labels={"method": "PSFT->DPO", "model": "toy", "seed": 1},
        metrics=[
            {"step": s, "loss": 0.69, "rewards/chosen": 0.01 * s, "rewards/rejected": -0.02 * s}
            for s in range(1, 11)
        ],
    )
    run_nodes.append({"node_id": "dpo", "stage": "dpo", "fingerprint": dfp})
    run_nodes.append(
        {
            "node_id": "broken",
            "stage": "eval",
            "fingerprint": "f" * 64,
            "status": "failed",
            "error": "boom",
        }
    )
    write_run_record(ws, "demo-00000000-20261122T131500", "demo", run_nodes, status="failed")
    return ws


def write_samples(
    node_dir: str | Path, benchmark: str, verdicts: list[list[bool]], field: str = "correct"
) -> Path:
    """`outputs/samples/<benchmark>.jsonl` as the evals write it: verdicts[item][sample]."""
    path = Path(node_dir) / "outputs" / "samples" / f"{benchmark}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i, item in enumerate(verdicts):
            for j, ok in enumerate(item):
                rec = {"suite": "s", "index": i, "sample": j, "step": None, field: ok}
                f.write(json.dumps(rec) + "\n")
    return path
