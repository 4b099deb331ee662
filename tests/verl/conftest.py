"""Fixtures for the verl backend tests.

No `__init__.py` in this folder on purpose: it would make `tests/verl` importable as a package
named `verl` and shadow the real one. `verl_cpu_platform.py` here is the test-only CPU platform
plug-in that verl's subprocesses load (VERL_USE_EXTERNAL_MODULES).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def write_reverse_dataset(path: Path, n: int, seed: int = 0) -> Path:
    """Chat rows "reverse <word>" -> the word reversed (the trainer tests' toy skill)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6)))
        msgs = [
            {"role": "user", "content": f"reverse {word}"},
            {"role": "assistant", "content": word[::-1]},
        ]
        if i % 3 == 0:
            msgs.insert(0, {"role": "system", "content": "Please reason step by step."})
        rows.append({"messages": msgs})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory) -> Path:
    from psft_orchestrator.data.toy.model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("verl_model") / "micro", size="micro", seed=0)


@pytest.fixture(scope="session")
def reverse_data(tmp_path_factory) -> Path:
    return write_reverse_dataset(tmp_path_factory.mktemp("verl_data") / "reverse.jsonl", n=48)


@pytest.fixture
def cpu_shim(monkeypatch):
    """Environment under which verl's subprocesses load the CPU platform plug-in."""
    import os

    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "verl_cpu_platform")
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    )
