import json
from pathlib import Path

import pytest
import yaml

from psft_orchestrator.configs.evals import LMEvalSuite
from psft_orchestrator.evals.lmeval import scores_from_results, task_name, write_task_yamls

from .conftest import write_jsonl

GEN_ROWS = [  # the parrot's greedy answer matches the first row only
    {"prompt": "What is 2 plus 3?", "answer": "The answer is \\boxed{5}", "task": "toy"},
    {"prompt": [{"role": "user", "content": "Reverse cat."}], "answer": "tac", "task": "toy"},
]
MC_ROWS = [
    {
        "prompt": "Which number is the largest?\nA. 12\nB. 99",
        "answer": "B",
        "choices": ["A", "B"],
        "task": "mc",
    },
    {
        "prompt": "Pick the fruit.",
        "answer": "pear",
        "choices": ["cat", "pear", "red"],
        "task": "mc",
    },
]


def test_task_yamls_for_local_benchmarks(tmp_path):
    gen = write_jsonl(tmp_path / "gen.jsonl", GEN_ROWS)
    mc = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    names = write_task_yamls({"toy-gen": gen, "toy.mc": mc}, tmp_path / "tasks", max_gen_toks=32)
    assert names == {"psft_toy_gen": "toy-gen", "psft_toy_mc": "toy.mc"}

    gen_cfg = yaml.safe_load((tmp_path / "tasks" / "psft_toy_gen.yaml").read_text())
    assert gen_cfg["output_type"] == "generate_until"
    assert gen_cfg["dataset_path"] == "json"
    data_file = gen_cfg["dataset_kwargs"]["data_files"]["test"]
    assert [json.loads(x) for x in Path(data_file).read_text().splitlines()] == [
        {"question": "What is 2 plus 3?", "answer": "The answer is \\boxed{5}"},
        {"question": "Reverse cat.", "answer": "tac"},
    ]
    assert gen_cfg["generation_kwargs"]["max_gen_toks"] == 32
    assert gen_cfg["metric_list"][0]["metric"] == "exact_match"

    mc_cfg = yaml.safe_load((tmp_path / "tasks" / "psft_toy_mc.yaml").read_text())
    assert mc_cfg["output_type"] == "multiple_choice"
    assert [
        json.loads(x)["gold"]
        for x in Path(mc_cfg["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()
    ] == [1, 1]


def test_a_benchmark_mixing_choices_and_free_answers_is_refused(tmp_path):
    """lm-eval runs one output type per task; a mixed file used to crash inside lm-eval with
    `'NoneType' object is not iterable` (the toy alignment_tax suite)."""
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [MC_ROWS[0], GEN_ROWS[0]])
    with pytest.raises(ValueError, match="mixes multiple-choice rows"):
        write_task_yamls({"mixed": mixed}, tmp_path / "tasks")


def test_scores_from_results():
    results = {
        "results": {
            "psft_toy": {
                "alias": "psft_toy",
                "exact_match,none": 0.5,
                "exact_match_stderr,none": "N/A",
            },
            "gsm8k_cot": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1},
        },
        "n-samples": {
            "psft_toy": {"original": 2, "effective": 2},
            "gsm8k_cot": {"original": 8, "effective": 4},
        },
    }
    rows = scores_from_results(results, "align", {"psft_toy": "toy"}, step=5)
    assert [(r.benchmark, r.metric, r.value, r.n, r.stderr, r.step) for r in rows] == [
        ("toy", "exact_match", 50.0, 2, None, 5),
        ("gsm8k_cot", "exact_match,strict-match", 25.0, 4, 10.0, 5),
    ]
    assert task_name("a-b.c") == "psft_a_b_c"


def test_lm_eval_on_local_tasks_with_the_parrot(parrot_model, tmp_path):
    """Real lm-eval 0.4.13 run on CPU (about 5 s): generate_until scored by exact match, multiple choice by acc."""
    from psft_orchestrator.evals.lmeval import evaluate_with_lmeval
    from psft_orchestrator.evals.records import SampleWriter

    benchmarks = {
        "toy_gen": write_jsonl(tmp_path / "gen.jsonl", GEN_ROWS),
        "toy_mc": write_jsonl(tmp_path / "mc.jsonl", MC_ROWS),
    }
    suite = LMEvalSuite(benchmarks=["toy_gen", "toy_mc"], batch_size=2, max_gen_toks=16)
    scores = evaluate_with_lmeval(
        str(parrot_model),
        suite,
        benchmarks,
        tmp_path / "work",
        samples=SampleWriter(tmp_path / "samples"),
    )
    got = {(s.benchmark, s.metric): s for s in scores}
    assert got[("toy_gen", "exact_match")].value == pytest.approx(50.0)
    assert got[("toy_gen", "exact_match")].n == 2
    assert 0.0 <= got[("toy_mc", "acc")].value <= 100.0 and got[("toy_mc", "acc")].n == 2
    records = [
        json.loads(x) for x in (tmp_path / "samples" / "toy_gen.jsonl").read_text().splitlines()
    ]
    assert [r["exact_match"] for r in sorted(records, key=lambda r: r["index"])] == [1.0, 0.0]
