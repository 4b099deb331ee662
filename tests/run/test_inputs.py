"""Toy inputs are made once per machine: a new workspace copies them from the machine's cache,
without importing transformers (seconds of a run's start-up)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from .conftest import SMALL

MATERIALIZE = """
import sys
from pathlib import Path
from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.run.inputs import materialize_toy
plan = build_plan(Path(sys.argv[1]), workspace=Path(sys.argv[2]))
materialize_toy(plan, set(plan.toy_inputs))
print("transformers imported:", "transformers" in sys.modules)
"""


def materialize(ws: Path, cache: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", MATERIALIZE, str(SMALL), str(ws)],
        env={**os.environ, "PSFT_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


def digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_second_workspace_copies_toy_inputs_from_the_machine_cache(tmp_path: Path):
    cache = tmp_path / "cache"
    assert materialize(tmp_path / "ws1", cache) == "transformers imported: True"
    assert materialize(tmp_path / "ws2", cache) == "transformers imported: False"
    inputs1, inputs2 = tmp_path / "ws1" / "inputs", tmp_path / "ws2" / "inputs"
    assert digest(inputs1) == digest(inputs2)
    models = list((inputs2 / "toy-models").iterdir())
    assert len(models) == 1 and (models[0] / "config.json").exists()
    assert len(list((inputs2 / "toy-data").glob("*.jsonl"))) == 2
    assert not list(inputs2.rglob(".*tmp*")), "no temporary copy is left behind"
