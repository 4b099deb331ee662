"""KV-cache decoders behind `evals.generate`: prefill a left-padded batch, then one token per row
per step, dropping finished rows.

- `StaticDecoder` (Llama-style models: Qwen2, Llama): runs the model's own modules (norms,
  projections, rotary embedding, MLP) in a plain loop, writes keys and values into buffers
  allocated once, and attends with one boolean mask. HF's forward spends most of a tiny model's
  step on building masks, growing the cache with `torch.cat` and wrapping outputs; this does not.
- `HFDecoder` (every other model): the model's forward with a `DynamicCache`.

Both take the same inputs and give the same logits up to float rounding; tests/evals check
that greedy completions are identical to HF `generate`'s.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

STATIC_MODEL_TYPES = {"qwen2", "llama"}


def make_decoder(model: Any, batch: int, max_len: int) -> StaticDecoder | HFDecoder:
    cfg = model.config
    static = (
        getattr(cfg, "model_type", None) in STATIC_MODEL_TYPES
        and not getattr(cfg, "use_sliding_window", False)
        and hasattr(model, "model")
        and hasattr(model.model, "rotary_emb")
    )
    return StaticDecoder(model, batch, max_len) if static else HFDecoder(model)


class HFDecoder:
    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model, self.cache, self.mask = model, DynamicCache(), None

    def step(self, ids: torch.Tensor, real: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits after the last of `ids` ([B, T] new tokens; `real` marks non-padding)."""
        self.mask = real if self.mask is None else torch.cat([self.mask, real], dim=1)
        out = self.model(
            input_ids=ids, attention_mask=self.mask, position_ids=positions,
            past_key_values=self.cache, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        return out.logits[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished rows leave the batch)."""
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]

    def repeat(self, k: int) -> None:
        """Each row k times in a row (k samples of one prompt share its prefill)."""
        self.cache.batch_repeat_interleave(k)
        self.mask = self.mask.repeat_interleave(k, dim=0)


class StaticDecoder:
    def __init__(self, model: Any, batch: int, max_len: int) -> None:
        cfg, p = model.config, next(model.parameters())
        self.model, self.inner = model, model.model
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, self.head_dim)
        self.keys = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.values = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.real = torch.zeros((batch, max_len), dtype=torch.bool, device=p.device)
        self.gqa = cfg.num_key_value_heads != cfg.num_attention_heads
        self.length = 0

    def step(self, ids: torch.Tensor, real: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        (b, t), start, end = ids.shape, self.length, self.length + ids.shape[1]
        self.real[:, start:end] = real.bool()
        mask = self._mask(start, end)
        h = self.inner.embed_tokens(ids)
        cos, sin = self.inner.rotary_emb(h, positions)
        for i, layer in enumerate(self.inner.layers):
            attn, x = layer.self_attn, layer.input_layernorm(h)
            q, k, v = (
                proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
                for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            self.keys[i, :, :, start:end] = k
            self.values[i, :, :, start:end] = v
            out = F.scaled_dot_product_attention(
                q, self.keys[i, :, :, :end], self.values[i, :, :, :end],
                attn_mask=mask, scale=attn.scaling, enable_gqa=self.gqa,
            )  # fmt: skip
            h = h + attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        self.length = end
        return self.model.lm_head(self.inner.norm(h[:, -1]))

    def _mask(self, start: int, end: int) -> torch.Tensor:
        """[B, 1, T, end]: a query sees the real keys up to itself, and always itself (so that a
        padding query attends to something and stays finite)."""
        device = self.real.device
        keys = torch.arange(end, device=device)
        queries = torch.arange(start, end, device=device)
        causal = keys[None, :] <= queries[:, None]
        itself = keys[None, :] == queries[:, None]
        return ((causal[None] & self.real[:, None, :end]) | itself[None])[:, None]

    def select(self, rows: torch.Tensor) -> None:
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]
        self.real = self.real[rows]

    def repeat(self, k: int) -> None:
        self.keys = self.keys.repeat_interleave(k, dim=1)
        self.values = self.values.repeat_interleave(k, dim=1)
        self.real = self.real.repeat_interleave(k, dim=0)
