import json

import pytest

from psft_orchestrator.contract import InputRef, Job, ScoreRow
from psft_orchestrator.evals.run import evaluate_model, run_eval

from .conftest import write_jsonl


def _job(tmp_path, model_dir, suites, benchmarks) -> Job:
    return Job(
        node_id="eval",
        stage="eval",
        kind="eval",
        backend="native",
        fingerprint="0" * 64,
        config={
            "name": "eval",
            "kind": "eval",
            "resources": {"cpus": 1},
            "suites": suites,
        },  # whole stage
        inputs={
            "model": InputRef(type="model", path=str(model_dir)),
            "benchmarks": [
                InputRef(type="benchmark", path=str(p), name=n) for n, p in benchmarks.items()
            ],
        },
        node_dir=str(tmp_path / "node"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        output_type="eval",
    )


def test_run_eval_writes_scores_samples_and_metrics(parrot_model, math_bench, tmp_path):
    exact = write_jsonl(
        tmp_path / "exact.jsonl", [{"prompt": "What is 2 plus 3?", "answer": "5", "task": "x"}]
    )
    suites = [
        {"type": "math", "benchmarks": ["toy_math"], "k": 2, "max_new_tokens": 16},
        {"type": "rules", "name": "ood", "benchmarks": ["toy_exact"], "max_new_tokens": 16},
        {"type": "lmeval", "benchmarks": ["toy_exact"], "max_gen_toks": 16},
    ]
    job = _job(tmp_path, parrot_model, suites, {"toy_math": math_bench, "toy_exact": exact})
    summary = run_eval(job)

    scores = [
        ScoreRow.model_validate(s)
        for s in json.loads((job.out / "outputs" / "scores.json").read_text())
    ]
    got = {(s.suite, s.benchmark, s.metric): s.value for s in scores}
    assert got[("math", "toy_math", "avg@2")] == pytest.approx(200 / 3)
    assert got[("ood", "toy_exact", "exact_match")] == 100.0
    assert (
        got[("lmeval", "toy_exact", "exact_match")] == 0.0
    )  # lm-eval compares the whole completion
    assert summary["math/toy_math/avg@2"] == pytest.approx(66.6667)

    math_samples = (job.out / "outputs" / "samples" / "toy_math.jsonl").read_text().splitlines()
    assert len(math_samples) == 3 * 2
    exact_samples = [
        json.loads(x)
        for x in (job.out / "outputs" / "samples" / "toy_exact.jsonl").read_text().splitlines()
    ]
    assert [r["suite"] for r in exact_samples] == ["ood", "lmeval"]
    metrics = [json.loads(x) for x in (job.out / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [{"step": 0, **summary}]
    assert json.loads((job.out / "summary.json").read_text()) == summary


def test_undeclared_benchmark_is_an_error(parrot_model, math_bench, tmp_path):
    job = _job(
        tmp_path,
        parrot_model,
        [{"type": "math", "benchmarks": ["aime24"]}],
        {"toy_math": math_bench},
    )
    with pytest.raises(ValueError, match="aime24"):
        run_eval(job)


def test_evaluate_model_in_process_keeps_trainer_state(parrot, math_bench):
    import torch

    model, tok = parrot
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    scores = evaluate_model(
        model,
        tok,
        [{"type": "math", "benchmarks": ["m"], "k": 1, "max_new_tokens": 16}],
        {"m": math_bench},
        step=40,
    )
    assert torch.rand(1) == expected_next  # sampling did not consume the trainer's random stream
    assert model.training
    assert {(s.metric, s.step) for s in scores} == {("avg@1", 40), ("pass@1", 40)}
