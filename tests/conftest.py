"""Fixtures shared by the run-layer and end-to-end tests."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

# Tests never touch the user's ~/.cache/psft-orchestrator/store, and the shared store is off
# unless a test asks for one (`private_store`): a test that runs one spec in two workspaces
# (a reference run, then a killed and resumed one) must compute both, not link the second.
os.environ["PSFT_STORE"] = "off"


@pytest.fixture
def private_store(tmp_path_factory, monkeypatch) -> Path:
    """A fresh shared store for this test's runs. Ask for it before `fake_env` (for example
    with `pytest.mark.usefixtures("private_store")`), which copies the environment."""
    root = tmp_path_factory.mktemp("store")
    monkeypatch.setenv("PSFT_STORE", str(root))
    return root


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI runs on the fake backend (PSFT_FAKE_BACKEND=1), private Prefect home."""
    env = dict(os.environ)
    env.update(
        PSFT_FAKE_BACKEND="1", RAY_AUTH_MODE="disabled", PREFECT_HOME=str(tmp_path / "prefect")
    )
    env.pop("PREFECT_API_URL", None)
    return env


def write_reverse_dataset(path: Path, n: int, seed: int = 0) -> Path:
    """Chat rows "reverse <word>" -> the word reversed (a skill the micro model learns in seconds);
    some rows with a system turn."""
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
    """A randomly initialised micro toy model directory (tests must not modify it)."""
    from psft_orchestrator.data.toy.model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "micro", size="micro", seed=0)


@pytest.fixture(scope="session")
def reverse_data(tmp_path_factory) -> Path:
    return write_reverse_dataset(tmp_path_factory.mktemp("data") / "reverse.jsonl", n=48)
