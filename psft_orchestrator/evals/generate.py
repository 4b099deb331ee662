"""Sampling completions from an HF causal LM: batched, left-padded, chat-templated, seeded.

`generate(model, tokenizer, prompts, params)` returns `k` completions per prompt. Prompts are
expanded k times and cut into batches of `batch_size` sequences; before each batch the RNG is
seeded with `seed + batch index`, so the same model, seed and batch size give the same
completions on the same device. `batch_size=1` is the one-at-a-time mode (slow; kept for the
throughput benchmark and for debugging padding effects).

Generation stops at the tokenizer's eos and at `<|im_end|>` when the vocabulary has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    k: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0
    batch_size: int = 8


def sampling_params(suite: Any) -> SamplingParams:
    """The sampling settings of a math / rules / judge suite."""
    return SamplingParams(
        k=suite.k,
        temperature=suite.temperature,
        top_p=suite.top_p,
        max_new_tokens=suite.max_new_tokens,
        seed=suite.seed,
        batch_size=suite.batch_size,
    )


def load_model(
    path: str | Path, dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode) and tokenizer from a local HF directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    model.eval()
    return model, tokenizer


def as_messages(prompt: str | Messages, system_prompt: str | None = None) -> Messages:
    """A benchmark prompt as chat messages, with `system_prompt` prepended when it has no system turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt is not None and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def stop_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """eos ids of the generation config and tokenizer, plus `<|im_end|>` if the vocabulary has it."""
    ids: list[int] = []
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (cfg_eos, tokenizer.eos_token_id):
        ids.extend(value if isinstance(value, list) else [value] if value is not None else [])
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    return sorted(set(ids))


def render(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    params: SamplingParams,
) -> list[list[str]]:
    """`params.k` completions per prompt (decoded, special tokens removed), in prompt order.

    `model` may also be another engine with `complete(prompts, params, tokenizer)` (the vllm
    backend's generator): the suites do not know which one answers."""
    if hasattr(model, "complete"):
        return model.complete(prompts, params, tokenizer)
    import torch

    texts = [render(tokenizer, m) for m in prompts for _ in range(params.k)]
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    sampling = params.temperature > 0
    gen_kwargs: dict[str, Any] = dict(
        do_sample=sampling,
        eos_token_id=stops,
        pad_token_id=pad_id,
    )
    if sampling:
        gen_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    completions: list[str] = []
    # fork_rng: a trainer calling this in-process keeps its own random stream.
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.no_grad():
            for b, start in enumerate(range(0, len(texts), params.batch_size)):
                batch = tokenizer(
                    texts[start : start + params.batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(device)
                torch.manual_seed(params.seed + b)
                prompt_len = batch["input_ids"].shape[1]
                out = model.generate(
                    **batch, **gen_kwargs, max_new_tokens=_room(model, prompt_len, params)
                )
                new_tokens = out[:, prompt_len:]
                completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return [completions[i * params.k : (i + 1) * params.k] for i in range(len(prompts))]


def _room(model: Any, prompt_len: int, params: SamplingParams) -> int:
    """max_new_tokens, capped so prompt + completion fit the model's positions (toy models: 1024)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is None:
        return params.max_new_tokens
    if prompt_len >= limit:
        raise ValueError(
            f"prompt of {prompt_len} tokens does not fit the model's {limit} positions"
        )
    return min(params.max_new_tokens, limit - prompt_len)
