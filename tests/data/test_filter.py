import json
from pathlib import Path

import pytest

from psft_orchestrator.configs.filter import FilterConfig
from psft_orchestrator.contract import InputRef, Job
from psft_orchestrator.data.filter import filter_file, run_filter

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def synthetic_rows() -> tuple[list[dict], dict[str, int]]:
    """Problem/solution rows with a known number of rows per drop reason (interleaved)."""
    good = [
        {
            "problem": f"What is {i} plus 1?",
            "solution": f"{i} + 1 = \\boxed{{{i + 1}}}",
            "answer": str(i + 1),
        }
        for i in range(40)
    ]
    equivalent = [
        {
            "problem": f"Half of {i}?",
            "solution": f"\\boxed{{\\frac{{{i}}}{{2}}}}",
            "answer": str(i / 2),
        }
        for i in range(1, 6)
    ]
    no_reference = [
        {"problem": f"Say {i}.", "solution": f"{i}"} for i in range(4)
    ]  # kept: nothing to verify
    wrong = [
        {"problem": f"What is {i} plus 2?", "solution": f"\\boxed{{{i + 3}}}", "answer": str(i + 2)}
        for i in range(8)
    ]
    unboxed = [
        {"problem": f"What is {i} times 1?", "solution": f"It is {i}.", "answer": str(i)}
        for i in range(5)
    ]
    too_long = [
        {"problem": f"Long {i}", "solution": "x" * 400 + f" \\boxed{{{i}}}", "answer": str(i)}
        for i in range(7)
    ]
    invalid = [{"problem": f"Missing solution {i}"} for i in range(3)]
    duplicates = good[:6]
    rows = []
    groups = [good, equivalent, no_reference, wrong, unboxed, too_long, invalid, duplicates]
    for i in range(max(map(len, groups))):
        rows += [g[i] for g in groups if i < len(g)]
    expected = {
        "rows_in": len(rows),
        "rows_kept": 40 + 5 + 4,
        "dropped_invalid": 3,
        "dropped_wrong_answer": 8 + 5,
        "dropped_too_long": 7,
        "dropped_duplicate": 6,
    }
    return rows, expected


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from psft_orchestrator.data.toy.tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out)
    return out


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_filter_counts_each_drop_reason(tmp_path, tokenizer_dir):
    rows, expected = synthetic_rows()
    source = _write(tmp_path / "src.jsonl", rows)
    node = tmp_path / "node"
    job = Job(
        node_id="filter",
        stage="filter",
        kind="filter",
        backend="native",
        fingerprint="0" * 64,
        config={  # the whole stage, as the run layer passes it
            "name": "filter",
            "kind": "filter",
            "resources": {"cpus": 2},
            "max_length": 200,
            "system_prompt": SYSTEM,
            "num_workers": 2,
            "chunk_size": 7,
            "keep_dropped_samples": 2,
        },
        inputs={
            "data": InputRef(type="dataset", path=str(source)),
            "model": InputRef(type="model", path=str(tokenizer_dir)),
        },
        node_dir=str(node),
        checkpoint_dir=str(tmp_path / "ckpt"),
        output_type="dataset",
    )
    result = run_filter(job)
    assert {k: result[k] for k in expected} == expected

    kept = _read(node / "outputs" / "data.jsonl")
    assert len(kept) == expected["rows_kept"]
    assert all(r["messages"][0] == {"role": "system", "content": SYSTEM} for r in kept)
    assert kept[0]["messages"][1:] == [
        {"role": "user", "content": "What is 0 plus 1?"},
        {"role": "assistant", "content": "0 + 1 = \\boxed{1}"},
    ]
    assert len({json.dumps(r) for r in kept}) == len(kept)
    assert not (node / "outputs" / "data.jsonl.tmp").exists()

    metrics = _read(node / "metrics.jsonl")
    assert len(metrics) == 1 and metrics[0]["step"] == 0
    assert {k: metrics[0][k] for k in expected} == expected
    assert json.loads((node / "summary.json").read_text())["rows_kept"] == expected["rows_kept"]

    dropped = _read(node / "dropped_samples.jsonl")
    reasons = [d["reason"] for d in dropped]
    assert sorted(set(reasons)) == ["duplicate", "invalid", "too_long", "wrong_answer"]
    assert all(reasons.count(r) == 2 for r in set(reasons))


def test_worker_count_does_not_change_the_output(tmp_path, tokenizer_dir):
    rows, expected = synthetic_rows()
    source = _write(tmp_path / "src.jsonl", rows)
    outputs = []
    for workers in (1, 2):
        cfg = FilterConfig(max_length=200, num_workers=workers, chunk_size=5)
        out = tmp_path / f"out{workers}.jsonl"
        result = filter_file(source, out, cfg, "dataset", tokenizer_dir=str(tokenizer_dir))
        assert {k: result[k] for k in expected} == expected
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]


def test_switches_turn_checks_off(tmp_path):
    rows, expected = synthetic_rows()
    source = _write(tmp_path / "src.jsonl", rows)
    cfg = FilterConfig(verify_answers=False, dedupe=False, num_workers=1)
    result = filter_file(source, tmp_path / "out.jsonl", cfg, "dataset")
    assert result["rows_kept"] == expected["rows_in"] - expected["dropped_invalid"]
    assert (
        result["dropped_wrong_answer"]
        == result["dropped_too_long"]
        == result["dropped_duplicate"]
        == 0
    )


def test_max_length_needs_a_tokenizer(tmp_path):
    source = _write(tmp_path / "src.jsonl", synthetic_rows()[0])
    with pytest.raises(ValueError, match="model"):
        filter_file(source, tmp_path / "out.jsonl", FilterConfig(max_length=10), "dataset")


def test_preference_rows_length_uses_the_longer_side(tmp_path, tokenizer_dir):
    rows = [
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "y" * 300},
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
    ]
    source = _write(tmp_path / "prefs.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    result = filter_file(
        source,
        out,
        FilterConfig(max_length=100, num_workers=1, system_prompt="S"),
        "preference",
        tokenizer_dir=str(tokenizer_dir),
    )
    assert (result["rows_kept"], result["dropped_too_long"], result["dropped_duplicate"]) == (
        1,
        1,
        1,
    )
    assert _read(out) == [
        {
            "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Say hi"}],
            "chosen": "Hi!",
            "rejected": "No.",
        }
    ]
