"""Tokenisation with response masks, cutoff policies, batching; optimizer groups and schedules."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from psft_orchestrator.configs.training import OptimConfig, SFTConfig
from psft_orchestrator.training import data as D
from psft_orchestrator.training.optim import build_optimizer, build_scheduler, lr_factor

CONVO = [
    {"role": "system", "content": "Please reason step by step."},
    {"role": "user", "content": "reverse cat"},
    {"role": "assistant", "content": "tac"},
    {"role": "user", "content": "reverse dog"},
    {"role": "assistant", "content": "god"},
]


def test_targets_are_exactly_the_assistant_turns_with_their_end_token(tokenizer):
    ex = D.encode_chat(tokenizer, CONVO)
    pieces = [tokenizer.decode([i]) for i in ex.input_ids]
    trained = "".join(p for p, t in zip(pieces, ex.target, strict=True) if t)
    assert trained == "tac<|im_end|>god<|im_end|>"
    # the same span as the template's own {% generation %} markers
    ref = tokenizer.apply_chat_template(CONVO, return_assistant_tokens_mask=True, return_dict=True)
    assert ref["input_ids"] == ex.input_ids and ref["assistant_masks"] == ex.target
    # no prompt token is a target: the user/system words never appear in the trained text
    assert "reverse" not in trained and "Please" not in trained


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cutoff_drop_and_truncate_are_counted(tokenizer, tmp_path):
    long = [{"role": "user", "content": "reverse abc"}, {"role": "assistant", "content": "x" * 60}]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    no_resp = [{"role": "user", "content": "hi"}]
    prompt_only_fits = [
        {"role": "user", "content": "y" * 60},
        {"role": "assistant", "content": "ok"},
    ]
    path = _write(
        tmp_path / "d.jsonl", [{"messages": m} for m in (long, short, no_resp, prompt_only_fits)]
    )
    n_short = len(D.encode_chat(tokenizer, short))
    exs, st = D.load_chat_dataset(path, tokenizer, max_length=40, truncation="drop")
    assert (st.rows, st.kept, st.dropped_too_long, st.dropped_no_response, st.truncated) == (
        4,
        1,
        2,
        1,
        0,
    )
    assert len(exs[0]) == n_short
    exs, st = D.load_chat_dataset(path, tokenizer, max_length=40, truncation="truncate")
    # the long response is cut to 40 tokens; the 60-char prompt leaves no response → dropped
    assert (st.kept, st.truncated, st.dropped_no_response, st.dropped_too_long) == (2, 2, 2, 0)
    assert max(len(e) for e in exs) == 40 and all(e.n_targets > 0 for e in exs)
    assert st.target_tokens == sum(e.n_targets for e in exs)


def test_train_batches_are_deterministic_grouped_and_cover_the_epoch():
    lengths = [((i * 37) % 50) + 5 for i in range(200)]
    a = D.train_batches(lengths, 8, seed=3, epoch=0)
    assert a == D.train_batches(lengths, 8, seed=3, epoch=0)
    assert (
        a
        != D.train_batches(lengths, 8, seed=3, epoch=1)
        != D.train_batches(lengths, 8, seed=4, epoch=0)
    )
    assert len(a) == 25 and sorted(i for b in a for i in b) == list(range(200))
    # grouped by length: far less spread inside a train batch than in a random one
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    assert spread < 15
    # the remainder that does not fill a train batch is dropped
    assert len(D.train_batches(lengths[:21], 8, 0, 0)) == 2


def test_split_and_collate_shift_labels(tokenizer):
    exs = [D.Example(list(range(n)), [0] * (n - 2) + [1, 1]) for n in (5, 3, 7, 4)]
    minis = D.split_batch(exs, 2, 1)
    assert [[len(mb[0]) for mb in mini] for mini in minis] == [[3, 5], [4, 7]]
    c = D.collate([exs[0], exs[1]], pad_id=99)
    assert c["input_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 99, 99]]
    assert c["labels"].tolist() == [[1, 2, 3, 4], [1, 2, 99, 99]]
    assert c["loss_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 0, 0]]
    assert c["attention_mask"].sum().item() == 8


def test_optimizer_groups_skip_biases_norms_and_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    assert plain == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}
    model.requires_grad_(False)
    with pytest.raises(ValueError):
        build_optimizer(model, OptimConfig())


@pytest.mark.parametrize("sched", ["constant", "cosine", "linear"])
def test_schedule_warmup_then_decay_to_floor(sched):
    cfg = SFTConfig(lr=1.0, warmup_ratio=0.2, lr_scheduler=sched, min_lr_ratio=0.1)
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = build_optimizer(torch.nn.ParameterList([p]), cfg)
    s = build_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(s.get_last_lr()[0])
        opt.step()
        s.step()
    assert lrs[:2] == pytest.approx([0.5, 1.0])  # 2 warm-up steps: lr/2, lr
    if sched == "constant":
        assert lrs[2:] == pytest.approx([1.0] * 8)
    else:
        assert lrs[2] == pytest.approx(1.0)
        assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
        q = 7 / 8
        want = 0.1 + 0.9 * ((1 - q) if sched == "linear" else 0.5 * (1 + math.cos(math.pi * q)))
        assert lrs[9] == pytest.approx(want)
        assert lr_factor(10, 10, cfg) == pytest.approx(0.1)
