"""Data mistakes fail at `--plan` (exit 2, file:line, nothing written), not after training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psft_orchestrator.plan import data_checks
from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.spec.errors import SpecError

GOOD_CHAT = {
    "messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
}
GOOD_BENCH = {"prompt": "1+1?", "answer": "2", "task": "math"}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec_for(tmp: Path, train: str = "", bench_rows: int = 0) -> Path:
    """A spec training on chat.jsonl (and evaluating on bench.jsonl when bench_rows)."""
    bench = "  bench: {path: bench.jsonl, type: benchmark}\n" if bench_rows else ""
    eval_stage = (
        "  - name: ev\n    kind: eval\n    model: {from: t}\n"
        "    suites: [{type: math, benchmarks: [bench]}]\n"
        if bench_rows
        else ""
    )
    text = (
        "name: t\nmodels: {m: {toy: micro}}\ndatasets:\n"
        "  chat: {path: chat.jsonl, type: dataset}\n"
        f"{bench}stages:\n  - name: t\n    kind: sft\n    model: m\n    data: chat\n"
        f"    train_batch_size: 4\n{train}{eval_stage}"
    )
    (tmp / "spec.yaml").write_text(text)
    return tmp / "spec.yaml"


def plan_cli(spec: Path, ws: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "psft_orchestrator.cli.run",
            str(spec),
            "--plan",
            "--workspace",
            str(ws),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PSFT_CACHE_DIR": str(cache)},
    )


BAD_CHAT_ROWS = {
    "no_messages": ({"prompt": "hi", "response": "yo"}, "chat row without 'messages'"),
    "role_bot": (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},
        "messages[1] has role 'bot'; expected one of system, user, assistant",
    ),
    "no_assistant": (
        {"messages": [{"role": "user", "content": "hi"}]},
        "no assistant turn",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CHAT_ROWS))
def test_bad_chat_row_names_file_and_line(case: str, tmp_path: Path):
    bad, expected = BAD_CHAT_ROWS[case]
    data = write_rows(tmp_path / "chat.jsonl", [GOOD_CHAT] * 6 + [bad] + [GOOD_CHAT])
    proc = plan_cli(spec_for(tmp_path), tmp_path / "ws", tmp_path / "cache")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{data}:7: datasets.chat: row does not fit: {expected}" in proc.stderr, proc.stderr
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    "bad", [{"prompt": "1+1?", "task": "math"}, {"answer": "2"}], ids=["no_answer", "no_prompt"]
)
def test_bad_benchmark_row_names_file_and_line(bad: dict, tmp_path: Path):
    write_rows(tmp_path / "chat.jsonl", [GOOD_CHAT] * 8)
    bench = write_rows(tmp_path / "bench.jsonl", [GOOD_BENCH, GOOD_BENCH, bad])
    proc = plan_cli(spec_for(tmp_path, bench_rows=3), tmp_path / "ws", tmp_path / "cache")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{bench}:3: datasets.bench: row does not fit: benchmark row with" in proc.stderr
    assert not (tmp_path / "ws").exists()


def test_batch_larger_than_counted_file(tmp_path: Path):
    write_rows(tmp_path / "chat.jsonl", [GOOD_CHAT] * 3)
    spec = spec_for(tmp_path)
    proc = plan_cli(spec, tmp_path / "ws", tmp_path / "cache")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{spec}:6: t.train_batch_size: train_batch_size 4 is larger than the data" in (
        proc.stderr
    )
    assert "'chat' has 3 rows" in proc.stderr and "at most 3" in proc.stderr
    assert not (tmp_path / "ws").exists()


def test_batch_larger_than_toy_data_and_filter_bound(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: t
            models: {m: {toy: micro}}
            datasets: {d: {toy: math_sft, n: 10}}
            stages:
              - name: f
                kind: filter
                data: d
              - name: t
                kind: sft
                model: m
                data: {from: f}
                train_batch_size: 16
            """
        )
    )
    with pytest.raises(SpecError) as info:
        build_plan(spec, workspace=tmp_path / "ws")
    msg = info.value.render()
    assert f"{spec}:8: t.train_batch_size" in msg
    assert "at most 10 rows leave filter 'f'" in msg


def test_good_file_is_read_once_then_cached_by_content(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PSFT_CACHE_DIR", str(tmp_path / "cache"))
    data = write_rows(tmp_path / "chat.jsonl", [GOOD_CHAT] * 8)
    spec = spec_for(tmp_path)
    build_plan(spec, workspace=tmp_path / "ws")
    assert list((tmp_path / "cache" / "row-checks").glob("*-dataset-*.json"))

    def must_not_read(*args):
        raise AssertionError("a file whose content was checked before was read again")

    data_checks._seen.clear()  # a new process: only the on-disk cache remains
    monkeypatch.setattr(data_checks, "scan_file", must_not_read)
    build_plan(spec, workspace=tmp_path / "ws")
    write_rows(data, [GOOD_CHAT] * 9)  # new content: read again
    data_checks._seen.clear()
    with pytest.raises(AssertionError, match="read again"):
        build_plan(spec, workspace=tmp_path / "ws")
