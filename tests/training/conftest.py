"""Fixtures for the trainer tests: the toy micro model (random Qwen2, toy tokenizer) and a small
chat dataset with a learnable skill (reverse a short letter string)."""

from __future__ import annotations

import pytest
import torch

# The models here are tiny: one thread is as fast, and two threads spin badly on a shared CPU.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer(micro_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model)
