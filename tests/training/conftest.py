"""Fixtures for the trainer tests: the toy micro model (random Qwen2, toy tokenizer) and a small
chat dataset with a learnable skill (reverse a short letter string)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

# The models here are tiny: one thread is as fast, and two threads spin badly on a shared CPU.
torch.set_num_threads(1)


def write_reverse_dataset(path: Path, n: int, seed: int = 0) -> Path:
    """Chat rows "reverse <word>" → the word reversed; some with a system turn, some two-turn."""
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

    return make_tiny_model(tmp_path_factory.mktemp("model") / "micro", size="micro", seed=0)


@pytest.fixture(scope="session")
def tokenizer(micro_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model)


@pytest.fixture(scope="session")
def reverse_data(tmp_path_factory) -> Path:
    return write_reverse_dataset(tmp_path_factory.mktemp("data") / "reverse.jsonl", n=48)
