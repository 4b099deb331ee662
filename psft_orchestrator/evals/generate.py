"""Sampling completions from an HF causal LM: batched, left-padded, chat-templated, seeded.

`generate(model, tokenizer, prompts, params)` returns `k` completions per prompt, in prompt
order. How (each step is a speed-up that leaves greedy outputs unchanged; see
benchmarks/eval_throughput.py):

- prompts are sorted by length, so a batch (`batch_size` rows: `batch_size // k` prompts, k
  samples each) holds prompts of similar length (little left padding);
- each prompt is read once (prefill) and its KV cache copied to its k sample rows;
- each batch is decoded by a plain loop (no logits processors or stopping criteria per step)
  over a KV-cache decoder (evals/decoders.py): for Llama-style models (Qwen2, Llama) one that
  runs the model's modules with buffers allocated once, for others the model's forward;
- nucleus sampling looks at the 64 most probable tokens (a full sort only for a row whose
  nucleus is wider) and draws by the exponential race, not `torch.multinomial`;
- rows that emitted a stop token leave the batch (their cache rows are dropped) once they are a
  quarter of it, so later steps run on the rows still going; the batch ends when every row has
  stopped. Tokens stay on the device until then, and are decoded to text once at the end.

Before each batch the RNG is seeded with `seed + batch index`, so the same model, seed and batch
size give the same completions on the same device. `generate_reference` is the previous path
(HF `model.generate`, batches in prompt order), kept as the baseline of the benchmark and of
the tests that greedy outputs are identical.

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


def generate_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    params: SamplingParams,
) -> list[list[str]]:
    """The previous path: HF `model.generate` on batches in prompt order (the baseline)."""
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

    encoded = tokenizer([render(tokenizer, m) for m in prompts], add_special_tokens=False)
    sequences = encoded["input_ids"]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # stable
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    per_batch = max(1, params.batch_size // params.k)  # prompts per batch: k rows each
    outputs: list[list[list[int]]] = [[] for _ in sequences]
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
        for b, start in enumerate(range(0, len(order), per_batch)):
            rows = order[start : start + per_batch]
            torch.manual_seed(params.seed + b)
            batch = [sequences[i] for i in rows]
            new_tokens = decode_batch(model, batch, params, stops, pad_id, device)
            for n, i in enumerate(rows):
                outputs[i] = new_tokens[n * params.k : (n + 1) * params.k]
    texts = tokenizer.batch_decode([t for o in outputs for t in o], skip_special_tokens=True)
    return [texts[i * params.k : (i + 1) * params.k] for i in range(len(prompts))]


def decode_batch(
    model: Any,
    prompts: list[list[int]],
    params: SamplingParams,
    stops: list[int],
    pad_id: int,
    device: Any,
) -> list[list[int]]:
    """New token ids (stop token included) of `params.k` samples of each prompt, prompt-major,
    decoded together with a KV cache (evals/decoders.py). Each prompt is read once (prefill) and
    its cache copied to its k rows. Left padding, so every row's next token sits in the last
    column; position ids count real tokens only, as HF's generate does. Finished rows leave the
    batch; tokens stay on the device until the end (no per-step transfer)."""
    import torch

    from psft_orchestrator.evals.decoders import make_decoder

    ids, real = left_padded(prompts, pad_id, device)
    positions = (real.cumsum(-1) - 1).clamp(min=0)
    steps = _room(model, ids.shape[1], params)
    decoder = make_decoder(model, len(prompts), ids.shape[1] + steps)
    logits = decoder.step(ids, real, positions)
    k = params.k
    if k > 1:
        decoder.repeat(k)
        logits = logits.repeat_interleave(k, dim=0)
    rows = len(prompts) * k
    next_position = positions[:, -1:].repeat_interleave(k, dim=0) + 1
    alive = torch.arange(rows, device=device)  # batch row -> output row
    stopped = torch.zeros(rows, dtype=torch.bool, device=device)  # emitted a stop token
    tokens = torch.full((rows, steps), -1, dtype=torch.long, device=device)  # -1: none
    stop_ids = torch.tensor(stops, device=device)
    for step in range(steps):
        token = next_token(logits, params)
        tokens[alive, step] = token.masked_fill(stopped, -1)
        stopped |= torch.isin(token, stop_ids)
        finished = int(stopped.sum())  # the step's one device -> host sync
        if finished == len(alive):
            break
        if 4 * finished >= len(alive):  # a quarter has finished: drop those rows
            keep = (~stopped).nonzero().squeeze(1)
            decoder.select(keep)
            alive, token, next_position = alive[keep], token[keep], next_position[keep]
            stopped = stopped[keep]
        logits = decoder.step(token[:, None], torch.ones_like(token[:, None]), next_position)
        next_position = next_position + 1
    return [[t for t in row if t >= 0] for row in tokens.tolist()]


def left_padded(prompts: list[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    """[B, width] token ids padded on the left, and the mask of real (non-padding) tokens."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        real[r, width - len(p) :] = 1
    return ids.to(device), real.to(device)


# Sampling looks at the most probable tokens first; a row whose nucleus is wider falls back to a
# full sort. Same distribution as sorting the whole vocabulary, without sorting it every step.
NUCLEUS_CANDIDATES = 64


def next_token(logits: Any, params: SamplingParams) -> Any:
    """Greedy (temperature 0), or temperature + nucleus (top-p) sampling, as HF's generate
    samples: a token is kept while the more probable tokens before it hold less than top_p."""
    import torch

    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return sample(probs)
    top, ids = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)  # descending
    wide = top.sum(dim=-1) < params.top_p  # the nucleus may reach past the candidates
    if bool(wide.any()):
        top, ids = probs.sort(dim=-1, descending=True)
    kept = top.masked_fill(top.cumsum(dim=-1) - top >= params.top_p, 0.0)
    return ids.gather(-1, sample(kept)[:, None]).squeeze(1)


def sample(weights: Any) -> Any:
    """One index per row with probability proportional to `weights` (unnormalised): the
    exponential race (argmax of w / E, E ~ Exp(1)), cheaper than `torch.multinomial` on CPU."""
    import torch

    race = torch.empty_like(weights).exponential_().clamp_(min=torch.finfo(weights.dtype).tiny)
    return (weights / race).argmax(dim=-1)
