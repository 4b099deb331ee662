"""ChatML, the chat format of the toy world (Qwen's), without importing transformers.

The data generators render corpus text with `render_chat`; the tokenizer carries the same format
as a Jinja `CHAT_TEMPLATE`. tests/toy checks that both give the same string.
"""

from __future__ import annotations

EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END, UNK]

# Qwen-style ChatML, without Qwen's default system prompt (keeps toy sequences short).
# The {% generation %} markers let `apply_chat_template(..., return_assistant_tokens_mask=True)`
# mark the trained span: the assistant content plus its closing <|im_end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """`CHAT_TEMPLATE` in plain Python (corpus text is written without loading a tokenizer)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")
