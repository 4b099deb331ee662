"""Tiny Qwen2-architecture models, randomly initialised, written as ordinary HF directories.

Every stage treats a model as "a directory AutoModelForCausalLM/AutoTokenizer can load", so the
toy model is exactly that: Qwen2 config + safetensors weights + the toy tokenizer. Same seed,
same weights. Sizes are chosen for 2 CPU cores: `micro` for unit tests (seconds), `tiny` for the
demo (0.63 M parameters: pretrained in under 3 minutes of CPU, see docs/toy-world.md), `small`
when a little more capacity is wanted.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from psft_orchestrator.data.toy.tokenizer import EOS, IM_END, build_tokenizer

# hidden, layers, attention heads, kv heads, MLP width.  Head dim = hidden / heads.
SIZES: dict[str, dict[str, int]] = {
    "micro": dict(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
    ),
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=256,
    ),
    "small": dict(
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=704,
    ),
}


def tiny_config(size: str, vocab_size: int, eos_id: int, pad_id: int) -> Qwen2Config:
    if size not in SIZES:
        raise ValueError(f"unknown toy model size {size!r}; choose one of {sorted(SIZES)}")
    return Qwen2Config(
        vocab_size=vocab_size,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
        use_cache=True,
        torch_dtype="float32",
        attn_implementation="sdpa",
        **SIZES[size],
    )


def make_tiny_model(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a freshly initialised toy model (weights from `seed`) plus tokenizer to `out_dir`.

    The generation config stops at `<|im_end|>` (end of an assistant turn) as well as at
    `<|endoftext|>`, like Qwen's instruct models, and decodes greedily by default.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    eos_id = tok.convert_tokens_to_ids(EOS)
    im_end_id = tok.convert_tokens_to_ids(IM_END)
    config = tiny_config(size, vocab_size=len(tok), eos_id=eos_id, pad_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end_id, eos_id], pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.save_pretrained(out_dir)
    return out_dir


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
