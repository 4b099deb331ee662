"""The toy world's tokenizer: built locally in milliseconds, identical on every machine.

Design (why not a trained BPE): the toy skills are about characters and digits — reverse a
word, count a letter, sort digits, add numbers — so numbers and unknown strings must be split
into single characters (as Qwen splits digits). The fixed English of the task templates, on the
other hand, is worth one token per word, so sequences stay short and CPU training stays cheap.
So the pre-tokenizer isolates either a known template word (`WORDS`, optionally with its leading
space) or one single character, and a `WordLevel` model maps each piece to an id. No training
step means no tie-breaking or hash-order nondeterminism: same code, same files.

Known words are only recognised after a space or at the start of a line, so a quoted string such
as `"cat"` in a reversal task stays character-level.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from psft_orchestrator.data.toy.chatml import (
    CHAT_TEMPLATE,
    EOS,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    UNK,
)

__all__ = ["CHAT_TEMPLATE", "EOS", "IM_END", "IM_START", "SPECIAL_TOKENS", "UNK", "build_tokenizer"]

# Words of the task templates (data/toy/*). A word missing here is still encoded, one
# character per token; adding one changes ids, so bump TOKENIZER_VERSION.
TOKENIZER_VERSION = 2
WORDS: tuple[str, ...] = tuple(
    """
    system user assistant please reason step by and put your final answer within boxed
    the a an of in to is are was has have had it its he she they them their his her we you i
    for with from on at as be this that these those what which how many much does do did
    not no yes only one two three four five six seven eight nine ten
    start starts with after then now more less left total each per every box boxes bag bags
    buys finds gets receives gives away loses eats sells uses shares equally among friends
    doubles triples number numbers makes packs into same divides puts keeps collects
    apples pencils books coins marbles stickers cookies cards stamps shells candies toys
    tom anna ben lily sam mia max emma leo zoe
    check correct so result verify verification recompute again indeed answer
    reverse reversed letters letter word words sort sorted order increasing decreasing
    alphabetical digits digit times appear appears count characters character string
    larger largest smaller smallest option options choose correct give just
    write list name use exactly uppercase lowercase capital end period exclamation mark
    begin quotation marks wrap entire response include keyword commas any without
    colors animals fruits shapes red blue green yellow black white pink brown orange purple
    cat dog fish bird horse cow frog lion duck goat apple pear plum lemon mango grape
    circle square star heart oval line
    here below following must should
    animal color fruit shape comes alphabet
    """.split()  # noqa: SIM905 (a word list reads better as text)
)

_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n\t"


def _words_with_case() -> list[str]:
    """Each template word lower-case and capitalised, longest first (regex alternation order)."""
    forms = {w for word in WORDS for w in (word, word.capitalize())}
    forms.add("\\boxed")
    return sorted(forms, key=lambda w: (-len(w), w))


def _pre_tokenizer_pattern(words: list[str]) -> str:
    alternation = "|".join(re.escape(w) for w in words)
    # ` word` after anything, or `word` at the start of a line/string; else one character.
    return rf" (?:{alternation})\b|(?<![^\n])(?:{alternation})\b|[\s\S]"


def build_raw_tokenizer() -> Tokenizer:
    """The `tokenizers.Tokenizer` behind the HF wrapper (no files)."""
    words = _words_with_case()
    vocab: dict[str, int] = {}
    for piece in [*SPECIAL_TOKENS, *_ALPHABET, *words, *(" " + w for w in words)]:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex(_pre_tokenizer_pattern(words)), behavior="isolated"
    )
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def build_tokenizer(out_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Build the toy tokenizer; with `out_dir`, save it there (loadable by AutoTokenizer).

    eos and pad are `<|endoftext|>` (the document separator of pretraining); chat turns end with
    `<|im_end|>`, which the toy model's generation_config also lists as an eos token.
    """
    hf = PreTrainedTokenizerFast(
        tokenizer_object=build_raw_tokenizer(),
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    hf.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(out_dir)
    return hf
