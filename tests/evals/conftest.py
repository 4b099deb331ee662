"""Fixtures: tiny toy models (random, and a "parrot" trained to always answer one sentence) and
benchmark files in the project's `benchmark` row format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PARROT_ANSWER = "The answer is \\boxed{5}."
MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_parrot(model_dir: Path, answer: str = PARROT_ANSWER, steps: int = 60) -> Path:
    """Overfit the micro toy model to answer every chat prompt with `answer` (a few seconds on CPU),
    so suite results are known in advance."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psft_orchestrator.data.toy.model import make_tiny_model

    make_tiny_model(model_dir, size="micro", seed=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    questions = [
        "What is 2 plus 3?",
        "How many apples?",
        "Sort the digits of 321.",
        "Reverse cat.",
        "Tom has 4 apples and gets 1 more. How many apples does Tom have?",
    ]
    ids, labels = [], []
    for q in questions:
        for system in (None, MATH_SYSTEM, "You are a helpful assistant."):
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": q}
            ]
            prefix = tok(
                tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )["input_ids"]
            target = tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            ids.append(prefix + target)
            labels.append([-100] * len(prefix) + target)
    width = max(map(len, ids))
    input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    label_ids = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=label_ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, f"parrot did not learn its answer (loss {loss.item():.3f})"
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Micro models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    spinning made parrot training 4x slower than with one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def parrot_model(tmp_path_factory) -> Path:
    """A micro model that answers every question with PARROT_ANSWER."""
    return train_parrot(tmp_path_factory.mktemp("parrot"))


@pytest.fixture(scope="session")
def parrot(parrot_model):
    from psft_orchestrator.evals.generate import load_model

    return load_model(parrot_model)


@pytest.fixture()
def math_bench(tmp_path) -> Path:
    """Three problems: the parrot's \\boxed{5} is right for the first two (5 and 10/2), wrong for the third."""
    return write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"prompt": "What is 2 plus 3?", "answer": "5", "task": "math"},
            {
                "prompt": [{"role": "user", "content": "What is 10 divided by 2?"}],
                "answer": "\\frac{10}{2}",
                "task": "math",
            },
            {"prompt": "What is 3 plus 4?", "answer": "7", "task": "math"},
        ],
    )
