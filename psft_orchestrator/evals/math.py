"""In-domain math suite: k sampled completions per problem, last \\boxed{} checked by Math-Verify.

avg@k = mean over problems of the fraction of correct samples; pass@k = fraction of problems with
at least one correct sample. Both in percent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psft_orchestrator.configs.evals import MathSuite
from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.data.answers import extract_boxed, verify_answer
from psft_orchestrator.evals.generate import as_messages, generate, sampling_params
from psft_orchestrator.evals.records import SampleWriter, mean_score, read_benchmark


def math_scores(
    suite: str, benchmark: str, correct: list[list[bool]], step: int | None = None
) -> list[ScoreRow]:
    """avg@k and pass@k from per-problem lists of per-sample verdicts (k = samples per problem)."""
    k = len(correct[0]) if correct else 0
    return [
        mean_score(suite, benchmark, f"avg@{k}", [sum(c) / len(c) for c in correct], step),
        mean_score(suite, benchmark, f"pass@{k}", [float(any(c)) for c in correct], step),
    ]


def run_math_suite(
    model: Any,
    tokenizer: Any,
    suite: MathSuite,
    benchmarks: dict[str, str | Path],
    step: int | None = None,
    samples: SampleWriter | None = None,
) -> list[ScoreRow]:
    samples = samples or SampleWriter(None)
    params = sampling_params(suite)
    scores: list[ScoreRow] = []
    for name in suite.benchmarks:
        rows = read_benchmark(benchmarks[name], suite.limit)
        prompts = [as_messages(r["prompt"], suite.system_prompt) for r in rows]
        completions = generate(model, tokenizer, prompts, params)
        correct: list[list[bool]] = []
        records = []
        for i, (row, outs) in enumerate(zip(rows, completions, strict=True)):
            verdicts = []
            for j, text in enumerate(outs):
                answer = extract_boxed(text)
                ok = answer is not None and verify_answer(answer, str(row["answer"]))
                verdicts.append(ok)
                records.append(
                    {
                        "suite": suite.label,
                        "index": i,
                        "sample": j,
                        "step": step,
                        "prompt": prompts[i],
                        "completion": text,
                        "extracted": answer,
                        "reference": row["answer"],
                        "correct": ok,
                    }
                )
            correct.append(verdicts)
        samples.write(name, records)
        scores += math_scores(suite.label, name, correct, step)
    return scores
