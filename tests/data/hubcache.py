"""Build dataset repositories in a temporary Hugging Face cache, laid out as the hub lays them out:
`datasets--org--name/{blobs/<sha256>, snapshots/<commit>/<path> -> ../../blobs/<sha256>,
refs/main}`, with parquet data files and a README `configs:` block."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.run.inputs import materialize_prepared


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def readme(configs: dict[str, dict[str, str]]) -> str:
    """A dataset card whose `configs:` block maps each config's splits to file patterns."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, pattern in splits.items():
            lines += [f"  - split: {split}", f"    path: {pattern}"]
    return "\n".join([*lines, "---", "# A test dataset", ""])


def add_repo(
    cache: Path,
    repo: str,
    splits: dict[str, dict[str, list[dict[str, Any]]]],
    revision: str = "main",
) -> Path:
    """Store `{config: {split: rows}}` as `<config>/<split>-00000-of-00001.parquet` (config
    "default" as `data/...`); return the snapshot directory."""
    files: dict[str, bytes] = {}
    configs: dict[str, dict[str, str]] = {}
    for config, by_split in splits.items():
        folder = "data" if config == "default" else config
        for split, rows in by_split.items():
            files[f"{folder}/{split}-00000-of-00001.parquet"] = parquet_bytes(rows)
            configs.setdefault(config, {})[split] = f"{folder}/{split}-*"
    files["README.md"] = readme(configs).encode()
    repo_dir = cache / f"datasets--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for rel, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


def copy_snapshot(snapshot: Path, dest: Path) -> Path:
    """The snapshot's files as plain files in a local directory (what `path:` would point at)."""
    shutil.copytree(snapshot, dest, symlinks=False)
    return dest


STAGE_FOR = {
    "dataset": "{name: s, kind: sft, model: m, data: D}",
    "preference": "{name: s, kind: dpo, model: m, data: D}",
    "prompts": "{name: s, kind: grpo, model: m, data: D}",
    "benchmark": "{name: s, kind: eval, model: m, suites: [{type: math, benchmarks: [D]}]}",
}


def write_spec(tmp: Path, decl: str, typ: str) -> Path:
    """A spec with one dataset D (`decl`, a YAML flow mapping) and one stage that reads it."""
    spec = tmp / "spec.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            name: t
            models: {{m: {{toy: micro}}}}
            datasets:
              D: {decl}
            stages:
              - {STAGE_FOR[typ]}
            """
        )
    )
    return spec


def plan_rows(spec: Path, ws: Path) -> tuple[list[dict], str]:
    """Plan the spec, convert D into the workspace for real, and return its rows and input hash."""
    plan = build_plan(spec, workspace=ws)
    materialize_prepared(plan, {"D"})
    path = plan.prepared_inputs["D"].path(ws.resolve())
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    node = plan.nodes[0]
    return rows, next(h for h in node.input_hashes.values() if isinstance(h, str))
