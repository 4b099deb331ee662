"""Benchmark rows in, per-sample audit records out: the I/O every suite shares.

A benchmark row (docs/architecture.md): `{"prompt": [messages] | str, "answer": str, "task": str,
"choices"?: [str], "checks"?: [...]}`. Every judged completion becomes one line of
`outputs/samples/<benchmark>.jsonl` (suite, index, sample, prompt, completion, extracted answer,
verdict), so any number in scores.json can be recomputed by hand.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.data.formats import iter_rows


def read_benchmark(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` rows (all when None) of a local benchmark file or directory."""
    rows = list(itertools.islice(iter_rows(path), limit))
    if not rows:
        raise ValueError(f"{path}: benchmark has no rows")
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"{path}: benchmark row {i} has no `prompt`")
    return rows


def prompt_text(prompt: str | list[dict[str, str]]) -> str:
    """The last user turn of a prompt (what a judge or a lookup table sees)."""
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


class SampleWriter:
    """Appends per-sample records to `<dir>/<benchmark>.jsonl`; a writer with dir None drops them."""

    def __init__(self, directory: str | Path | None):
        self.dir = Path(directory) if directory is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, benchmark: str, records: list[dict[str, Any]]) -> None:
        if self.dir is None:
            return
        with (self.dir / f"{_safe(benchmark)}.jsonl").open("a") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in name)


def mean_score(
    suite: str, benchmark: str, metric: str, per_problem: list[float], step: int | None
) -> ScoreRow:
    """ScoreRow of the mean of per-problem values in [0, 1], in percent, with the standard error."""
    n = len(per_problem)
    if n == 0:
        return ScoreRow(suite=suite, benchmark=benchmark, metric=metric, value=0.0, n=0, step=step)
    mean = sum(per_problem) / n
    var = sum((x - mean) ** 2 for x in per_problem) / (n - 1) if n > 1 else 0.0
    return ScoreRow(
        suite=suite,
        benchmark=benchmark,
        metric=metric,
        value=100.0 * mean,
        n=n,
        stderr=100.0 * math.sqrt(var / n),
        step=step,
    )
