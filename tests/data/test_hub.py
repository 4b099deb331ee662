"""Declared datasets from a hub-layout cache, through `datasets`, offline: the split chosen, the
same rows and input hash at `path:`, the plan-time errors (tests/data/hubcache.py builds the
cache exactly as the hub lays out a dataset repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.spec.errors import SpecError

from .hubcache import add_repo, copy_snapshot, plan_rows, write_spec


def chat(i: int, split: str) -> dict:
    q = f"{split} question {i}"
    return {
        "prompt": q,
        "prompt_id": f"{split}-{i}",
        "messages": [
            {"role": "user", "content": q},
            {"role": "assistant", "content": f"{split} answer {i}"},
        ],
    }


def pair(i: int, split: str) -> dict:
    q = f"{split} pair {i}"
    return {
        "prompt": q,
        "prompt_id": str(i),
        "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": "bad"}],
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "good"}],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }


def dapo(i: int, split: str) -> dict:
    return {
        "data_source": "math_dapo",
        "prompt": [{"role": "user", "content": f"{split} problem {i}"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": str(i), "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": f"{split}-{i}"},
    }


def gsm8k(i: int, split: str) -> dict:
    return {
        "question": f"{split}: what is {i}+1000?",
        "answer": f"{i}+1000={i + 1000}\n#### {i + 1000:,}",
    }


# (type, repo, config, splits, row maker, check of a converted row against its index and split)
TWO_SPLITS = {
    "dataset": (
        "HuggingFaceH4/ultrachat_200k",
        "default",
        ("train_sft", "test_sft"),
        chat,
        lambda r, i, s: r["messages"][1]["content"] == f"{s} answer {i}",
    ),
    "preference": (
        "HuggingFaceH4/ultrafeedback_binarized",
        "default",
        ("train_prefs", "test_prefs"),
        pair,
        lambda r, i, s: (
            r["prompt"] == [{"role": "user", "content": f"{s} pair {i}"}]
            and (r["chosen"], r["rejected"]) == ("good", "bad")
        ),
    ),
    "prompts": (
        "BytedTsinghua-SIA/DAPO-Math-17k",
        "default",
        ("train", "test"),
        dapo,
        lambda r, i, s: (
            r["prompt"][0]["content"] == f"{s} problem {i}" and r["ground_truth"] == str(i)
        ),
    ),
    "benchmark": (
        "openai/gsm8k",
        "main",
        ("test", "train"),
        gsm8k,
        lambda r, i, s: r["prompt"] == f"{s}: what is {i}+1000?" and r["answer"] == str(i + 1000),
    ),
}


@pytest.mark.parametrize("typ", sorted(TWO_SPLITS))
def test_hf_id_and_split_load_exactly_that_split(typ: str, cache: Path, tmp_path: Path):
    repo, config, (want, other), make, check = TWO_SPLITS[typ]
    snapshot = add_repo(
        cache,
        repo,
        {
            config: {
                want: [make(i, want) for i in range(5)],
                other: [make(i, other) for i in range(3)],
            }
        },
    )
    cfg = "" if config == "default" else f", config: {config}"
    decl = f"{{hf_id: {repo}, type: {typ}, split: {want}{cfg}}}"
    rows, hub_hash = plan_rows(write_spec(tmp_path, decl, typ), tmp_path / "ws")
    assert len(rows) == 5
    assert all(check(r, i, want) for i, r in enumerate(rows)), rows

    # The same files at `path:` (plain copies, not cache symlinks): same rows, same input hash.
    local = copy_snapshot(snapshot, tmp_path / "local" / repo.split("/")[1])
    decl = f"{{path: local/{local.name}, type: {typ}, split: {want}{cfg}}}"
    rows_at_path, path_hash = plan_rows(write_spec(tmp_path, decl, typ), tmp_path / "ws2")
    assert rows_at_path == rows
    assert path_hash == hub_hash


def plan_cli(spec: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp / "hf-datasets")}
    ws = str(tmp / "ws")
    return subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.run", str(spec), "--plan", "--workspace", ws],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_dataset_not_in_cache_fails_plan_with_the_download_command(cache: Path, tmp_path: Path):
    spec = write_spec(tmp_path, "{hf_id: org/absent, type: dataset, split: train}", "dataset")
    proc = plan_cli(spec, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'D'" in proc.stderr and "org/absent" in proc.stderr
    assert str(cache) in proc.stderr
    assert "huggingface-cli download org/absent --repo-type dataset" in proc.stderr
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    ("decl", "expected"),
    [
        (
            "{hf_id: org/chat, type: dataset, split: train}",
            "no split 'train'; it has ['test_sft', 'train_sft']",
        ),
        (
            "{hf_id: org/chat, type: dataset, split: train_sft, config: nope}",
            "no config 'nope'; it has ['default']",
        ),
        (
            "{hf_id: org/chat, type: benchmark, split: train_sft}",
            "needs ['answer or checks or reference']",
        ),
        (
            "{hf_id: org/chat, type: prompts, split: train_sft, columns: {prompt: prompt, answer: solution}}",
            "missing column(s) ['solution'] named in columns:",
        ),
    ],
    ids=["split", "config", "schema", "columns"],
)
def test_bad_split_config_or_schema_fails_plan(
    decl: str, expected: str, cache: Path, tmp_path: Path
):
    add_repo(cache, "org/chat", {"default": {s: [chat(0, s)] for s in ("train_sft", "test_sft")}})
    typ = decl.split("type: ")[1].split(",")[0]
    proc = plan_cli(write_spec(tmp_path, decl, typ), tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "spec.yaml:4" in proc.stderr  # the dataset's declaration line


QUIZ = [{"q": f"What is {i}*2?", "a": str(2 * i), "id": i} for i in range(4)]


USER_Q = {"role": "user", "content": "What is 0*2?"}


@pytest.mark.parametrize(
    ("typ", "columns", "first"),
    [
        (
            "benchmark",
            "{prompt: q, answer: a}",
            {"prompt": "What is 0*2?", "answer": "0", "task": "benchmark"},
        ),
        (
            "prompts",
            "{prompt: q, answer: a}",
            {"prompt": [USER_Q], "ground_truth": "0", "data_source": "unknown"},
        ),
        (
            "dataset",
            "{prompt: q, response: a}",
            {"messages": [USER_Q, {"role": "assistant", "content": "0"}]},
        ),
    ],
)
def test_columns_map_a_schema_the_project_does_not_know(
    typ: str, columns: str, first: dict, cache: Path, tmp_path: Path
):
    add_repo(cache, "lab/quiz", {"default": {"train": QUIZ}})
    decl = f"{{hf_id: lab/quiz, type: {typ}, columns: {columns}}}"
    rows, _ = plan_rows(write_spec(tmp_path, decl, typ), tmp_path / "ws")
    assert len(rows) == 4 and rows[0] == first

    # A plain local file with the same mapping gives the same rows.
    (tmp_path / "quiz.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QUIZ))
    decl = f"{{path: quiz.jsonl, type: {typ}, columns: {columns}}}"
    assert plan_rows(write_spec(tmp_path, decl, typ), tmp_path / "ws2")[0] == rows


def test_unknown_column_field_is_a_spec_error(tmp_path: Path):
    (tmp_path / "quiz.jsonl").write_text(json.dumps(QUIZ[0]) + "\n")
    spec = write_spec(
        tmp_path, "{path: quiz.jsonl, type: benchmark, columns: {question: q}}", "benchmark"
    )
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['question'\] in columns:"):
        build_plan(spec, workspace=tmp_path / "ws")
