"""make_tiny_model writes an HF directory that loads offline and generates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from psft_orchestrator.data.toy.model import count_parameters, make_tiny_model


def test_micro_model_loads_and_generates(tmp_path: Path) -> None:
    d = make_tiny_model(tmp_path / "m", "micro", seed=0)
    model = AutoModelForCausalLM.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    assert model.config.model_type == "qwen2"
    assert model.config.tie_word_embeddings
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert 50_000 <= count_parameters(model) <= 100_000
    assert model.config.vocab_size == len(tok)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "Reverse the letters of \"abc\"."}],
        add_generation_prompt=True, return_dict=True, return_tensors="pt",
    )  # fmt: skip
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert (
        out.shape[0] == 1
        and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 8
    )
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id


def test_seed_fixes_the_weights(tmp_path: Path) -> None:
    a = make_tiny_model(tmp_path / "a", "micro", seed=0)
    b = make_tiny_model(tmp_path / "b", "micro", seed=0)
    c = make_tiny_model(tmp_path / "c", "micro", seed=1)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_tiny_size_is_in_range(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "t", "tiny"))
    assert 500_000 <= count_parameters(model) <= 3_000_000
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown toy model size"):
        make_tiny_model(tmp_path, "huge")
