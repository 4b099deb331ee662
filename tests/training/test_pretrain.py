"""A seconds-long pretraining run on the micro model: the loss goes down, the output is a
loadable HF directory, metrics are logged, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from psft_orchestrator.configs.training import PretrainConfig
from psft_orchestrator.data.toy.model import make_tiny_model
from psft_orchestrator.data.toy.tasks import write_toy_data
from psft_orchestrator.training import checkpoint
from psft_orchestrator.training.pretrain import pretrain


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pre")
    return make_tiny_model(d / "init", "micro", seed=0), write_toy_data(
        "corpus", 400, 0, d / "corpus.jsonl"
    )


def cfg(**kw) -> PretrainConfig:
    base = dict(
        max_steps=12, train_batch_size=8, micro_batch_size=4, max_length=64, lr=1e-2, seed=0
    )
    return PretrainConfig(**{**base, **kw})


def test_loss_goes_down_and_output_loads(setup, tmp_path: Path) -> None:
    init, corpus = setup
    summary = pretrain(cfg(), init, corpus, tmp_path / "out", tmp_path / "metrics.jsonl")
    assert summary["steps"] == 12
    assert summary["final_loss"] < summary["first_loss"] - 1.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model.generate(**tok("Sort", return_tensors="pt"), max_new_tokens=3).shape[1] >= 2


def test_resume_from_checkpoint_matches_uninterrupted_run(setup, tmp_path: Path) -> None:
    init, corpus = setup
    full = pretrain(cfg(max_steps=6), init, corpus, tmp_path / "full", tmp_path / "m_full.jsonl")

    # A run that "crashed" after step 3: what a run with save_every=3 leaves behind once its
    # step-6 checkpoint is gone (killed before that checkpoint was complete).
    ckpt = tmp_path / "ckpt"
    pretrain(
        cfg(max_steps=6, save_every=3),
        init,
        corpus,
        tmp_path / "crashed",
        tmp_path / "m1.jsonl",
        ckpt,
    )
    assert sorted(p.name for p in ckpt.glob("step_*")) == ["step_00000003", "step_00000006"]
    shutil.rmtree(ckpt / "step_00000006")
    assert checkpoint.latest(ckpt).step == 3
    resumed = pretrain(
        cfg(max_steps=6, save_every=3),
        init,
        corpus,
        tmp_path / "resumed",
        tmp_path / "m2.jsonl",
        ckpt,
    )
    assert resumed["resumed_from"] == 3
    assert [json.loads(r)["step"] for r in (tmp_path / "m2.jsonl").read_text().splitlines()] == [
        4,
        5,
        6,
    ]
    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical
    assert resumed["final_loss"] == full["final_loss"]


def test_too_small_corpus_is_a_clear_error(tmp_path: Path, setup) -> None:
    init, _ = setup
    corpus = write_toy_data("corpus", 2, 0, tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="fewer than"):
        pretrain(cfg(), init, corpus, tmp_path / "o", tmp_path / "m.jsonl")
