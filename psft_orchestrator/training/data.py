"""Chat rows → token ids with a response mask, length-grouped batches, padding.

A row is `{"messages": [{"role", "content"}, ...]}`. It is rendered with the tokenizer's own chat
template and tokenised once; a token is a *target* (enters the loss) when it starts inside an
assistant turn's span. The span of assistant turn k is the text that rendering `messages[:k+1]`
adds to rendering `messages[:k]` with the generation prompt, minus trailing whitespace: for
ChatML that is `content<|im_end|>` (the end token is trained, the "\\n" after it is not). Prompt,
system and user tokens are never targets. This works for any template whose renderings of
prefixes are prefixes of the full rendering (ChatML, Llama-3, the toy template); a template that
rewrites earlier turns (e.g. Qwen3's thinking-history stripping) raises a clear error.

Batching (see `train_batches`): shuffle per epoch from the seed, group by length into train
batches, shuffle again inside each train batch (so mini-batches are random subsets and not
ordered by length), then sort each mini-batch by length before cutting it into micro-batches
(which only affects padding, not the gradient: a mini-batch's gradient is a sum).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# Train batches are drawn from "megabatches" of this many train batches sorted by length: enough
# to cut padding, small enough that the data order stays mostly random (HF's LengthGroupedSampler
# uses 50).
LENGTH_GROUP_FACTOR = 8


@dataclass
class Example:
    """One tokenised conversation; `target[t]` = 1 when token t is a trained (response) token."""

    input_ids: list[int]
    target: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return sum(self.target)


@dataclass
class DataStats:
    """What happened to the rows (reported in metrics/summary)."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_response: int = 0
    tokens: int = 0
    target_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


class ChatTemplateError(ValueError):
    """The chat template cannot be split into prompt and response spans."""


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def response_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans `[start, end)` of its assistant turns."""
    text = _render(tokenizer, messages, generation_prompt=False)
    spans = []
    for k, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:k], generation_prompt=True) if k else ""
        upto = _render(tokenizer, messages[: k + 1], generation_prompt=False)
        if not upto.startswith(before) or not text.startswith(upto):
            raise ChatTemplateError(
                "the chat template does not render conversation prefixes as prefixes of the whole "
                f"conversation (assistant turn {k}); cannot locate the response tokens"
            )
        end = len(upto.rstrip())
        spans.append((len(before), end))
    return text, spans


def encode_chat(tokenizer: Any, messages: list[dict]) -> Example:
    """Tokenise one conversation; targets are the tokens that start inside an assistant span."""
    text, spans = response_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    target = [
        int(any(s <= start < e for s, e in spans) and end > start)
        for start, end in enc["offset_mapping"]
    ]
    return Example(list(enc["input_ids"]), target)


def load_chat_dataset(
    path: Path, tokenizer: Any, max_length: int, truncation: str = "drop"
) -> tuple[list[Example], DataStats]:
    """Read a chat JSONL file and tokenise it, applying the `max_length` cutoff.

    truncation="drop": longer examples are dropped. "truncate": cut to max_length tokens (this cuts
    the response; prompt + response order means the prompt is kept). Either way they are counted.
    Examples left with no target token (no assistant turn, or a prompt longer than the cutoff)
    are dropped and counted as `dropped_no_response`.
    """
    if truncation not in ("drop", "truncate"):
        raise ValueError(f"truncation must be 'drop' or 'truncate', not {truncation!r}")
    stats, out = DataStats(), []
    with Path(path).open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            stats.rows += 1
            row = json.loads(line)
            if "messages" not in row:
                raise ValueError(f"{path}:{line_no}: expected a chat row with 'messages'")
            ex = encode_chat(tokenizer, row["messages"])
            if len(ex) > max_length:
                if truncation == "drop":
                    stats.dropped_too_long += 1
                    continue
                stats.truncated += 1
                ex = Example(ex.input_ids[:max_length], ex.target[:max_length])
            # Token 0 is never predicted (nothing precedes it), so it cannot be a target.
            ex.target[0] = 0
            if ex.n_targets == 0:
                stats.dropped_no_response += 1
                continue
            out.append(ex)
            stats.kept += 1
            stats.tokens += len(ex)
            stats.target_tokens += ex.n_targets
    return out, stats


# ----------------------------------------------------------------------------- batching


def batches_per_epoch(n_examples: int, train_batch_size: int) -> int:
    """Full train batches per epoch (the last partial one is dropped, as verl's dataloader does)."""
    return n_examples // train_batch_size


def train_batches(
    lengths: list[int], train_batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Index lists of the train batches of one epoch; deterministic given (seed, epoch).

    Shuffle; cut into megabatches of LENGTH_GROUP_FACTOR train batches; sort each by length and cut
    into train batches (similar lengths → little padding); shuffle the train-batch order and the
    order inside each train batch. The remainder that does not fill a train batch is dropped.
    """
    rng = random.Random(f"{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    n = batches_per_epoch(len(lengths), train_batch_size) * train_batch_size
    order = order[:n]
    mega = LENGTH_GROUP_FACTOR * train_batch_size
    batches = []
    for i in range(0, n, mega):
        group = sorted(order[i : i + mega], key=lambda j: (lengths[j], j))
        batches += [group[k : k + train_batch_size] for k in range(0, len(group), train_batch_size)]
    rng.shuffle(batches)
    for b in batches:
        rng.shuffle(b)
    return batches


def split_batch(
    batch: list[Example], mini_batch_size: int, micro_batch_size: int
) -> list[list[list[Example]]]:
    """Train batch → mini-batches (in order) → micro-batches (each mini-batch sorted by length)."""
    minis = [batch[i : i + mini_batch_size] for i in range(0, len(batch), mini_batch_size)]
    out = []
    for mini in minis:
        mini = sorted(mini, key=len)
        out.append([mini[i : i + micro_batch_size] for i in range(0, len(mini), micro_batch_size)])
    return out


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example. Returns

    input_ids, attention_mask  `[B, T]`
    labels, loss_mask          `[B, T-1]`: the next token and whether it is a target, so that
                               logits[:, :-1] line up with labels (the usual causal-LM shift).
    """
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    tgt = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.tensor(e.input_ids)
        attn[i, : len(e)] = 1
        tgt[i, : len(e)] = torch.tensor(e.target)
    return {"input_ids": ids, "attention_mask": attn, "labels": ids[:, 1:], "loss_mask": tgt[:, 1:]}
