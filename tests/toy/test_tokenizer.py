"""The toy tokenizer: fast, byte-identical builds, lossless on all toy text, ChatML template."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from psft_orchestrator.data.toy.chatml import IM_END, render_chat
from psft_orchestrator.data.toy.tasks import TOY_TASKS, generate
from psft_orchestrator.data.toy.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tok")
    build_tokenizer(d)
    return AutoTokenizer.from_pretrained(d)


def all_toy_texts() -> list[str]:
    texts = []
    for task in TOY_TASKS:
        for row in generate(task, 100, 3):
            for key in ("text", "chosen", "rejected", "answer", "ground_truth"):
                if key in row:
                    texts.append(row[key])
            for msgs in (row.get("messages"), row.get("prompt")):
                if isinstance(msgs, list):
                    texts += [m["content"] for m in msgs]
    return texts


def test_build_is_byte_identical(tmp_path: Path) -> None:
    build_tokenizer(tmp_path / "a")
    build_tokenizer(tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_special_tokens_and_vocab(tok) -> None:
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert 500 <= len(tok) <= 2000


def test_round_trip_of_all_toy_text(tok) -> None:
    texts = all_toy_texts()
    assert len(texts) > 500
    for text, ids in zip(texts, tok(texts, add_special_tokens=False)["input_ids"], strict=True):
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_digits_and_quoted_strings_are_single_characters(tok) -> None:
    pieces = tok.tokenize('Reverse the letters of "cat". Tom has 125 apples.')
    assert pieces[pieces.index(" has") + 2 : pieces.index(" has") + 5] == ["1", "2", "5"]
    assert pieces[pieces.index('"') + 1 : pieces.index('"') + 4] == ["c", "a", "t"]
    assert " apples" in pieces and " Tom" in pieces  # template words are one token


def test_chat_template_matches_render_chat_and_marks_the_assistant_span(tok) -> None:
    msgs = [
        {"role": "system", "content": "Please reason step by step."},
        {"role": "user", "content": "Sort the digits of 321 in increasing order."},
        {"role": "assistant", "content": "123"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == render_chat(msgs)
    assert text.endswith(f"<|im_start|>assistant\n123{IM_END}\n")
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == render_chat(msgs[:2], add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and text.startswith(prompt)

    enc = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    span = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(span) == "123" + IM_END
    assert span[-1] == tok.convert_tokens_to_ids(IM_END)
