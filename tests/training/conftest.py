"""Fixtures for the trainer tests: the toy micro model (random Qwen2, toy tokenizer, from the
root conftest), a small chat dataset with a learnable skill, toy preference pairs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The models here are tiny: one thread is as fast, and two threads spin badly on a shared CPU.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer(micro_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model)


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    from psft_orchestrator.data.toy.tasks import write_toy_data

    return write_toy_data("preference", 16, 0, tmp_path_factory.mktemp("pairs") / "pairs.jsonl")
