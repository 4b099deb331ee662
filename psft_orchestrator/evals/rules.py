"""Rule-checked suite: IFEval-style instruction following plus exact-match / multiple-choice rows.

Rows with `checks` are judged by `data.toy.checks.check` -> (strict, loose), reported as
`strict_acc` and `loose_acc` (prompt level, averaged over the k samples). Rows with an `answer`
are judged by `evals.exact.grade` and reported as `exact_match`. A benchmark may mix both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psft_orchestrator.configs.evals import RulesSuite
from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.evals.exact import grade
from psft_orchestrator.evals.generate import as_messages, generate, sampling_params
from psft_orchestrator.evals.records import SampleWriter, mean_score, read_benchmark


def judge_row(row: dict[str, Any], completion: str) -> dict[str, bool]:
    """Verdicts of one completion: {"strict", "loose"} for checks rows, {"exact_match"} for answer rows."""
    if row.get("checks") is not None:
        from psft_orchestrator.data.toy.checks import check

        strict, loose = check(completion, row["checks"])
        return {"strict_acc": strict, "loose_acc": loose}
    if "answer" in row:
        return {"exact_match": grade(completion, row["answer"], row.get("choices"))}
    raise ValueError("rules suite: a row needs `checks` or `answer`")


def run_rules_suite(
    model: Any,
    tokenizer: Any,
    suite: RulesSuite,
    benchmarks: dict[str, str | Path],
    step: int | None = None,
    samples: SampleWriter | None = None,
) -> list[ScoreRow]:
    samples = samples or SampleWriter(None)
    scores: list[ScoreRow] = []
    for name in suite.benchmarks:
        rows = read_benchmark(benchmarks[name], suite.limit)
        prompts = [as_messages(r["prompt"], suite.system_prompt) for r in rows]
        completions = generate(model, tokenizer, prompts, sampling_params(suite))
        per_metric: dict[str, list[float]] = {}
        records = []
        for i, (row, outs) in enumerate(zip(rows, completions, strict=True)):
            verdicts = [judge_row(row, text) for text in outs]
            for metric in verdicts[0]:
                per_metric.setdefault(metric, []).append(
                    sum(v[metric] for v in verdicts) / len(verdicts)
                )
            records += [
                {
                    "suite": suite.label,
                    "index": i,
                    "sample": j,
                    "step": step,
                    "prompt": prompts[i],
                    "completion": text,
                    "reference": row.get("answer", row.get("checks")),
                    **v,
                }
                for j, (text, v) in enumerate(zip(outs, verdicts, strict=True))
            ]
        samples.write(name, records)
        scores += [
            mean_score(suite.label, name, m, values, step) for m, values in per_metric.items()
        ]
    return scores
