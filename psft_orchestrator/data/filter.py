"""The `filter` stage: convert a source dataset to the output row format and drop bad rows.

A row is dropped, first reason wins, when:
    invalid       it does not fit the source layout (data.formats)
    wrong_answer  it has a reference answer and Math-Verify does not match its last \\boxed{} to it
    too_long      it is longer than `max_length` tokens with the model's tokenizer and chat template
    duplicate     an identical converted row was kept before it

The first three checks run in a pool of worker processes over chunks of rows; deduplication runs
in the parent, over 16-byte digests, in source order, so results do not depend on the worker
count. At most `2 * workers` chunks are in flight, so memory is bounded by the chunk size (plus
the digests when deduplicating).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from psft_orchestrator.configs.filter import FilterConfig
from psft_orchestrator.contract import Job, MetricsWriter, config_for
from psft_orchestrator.data import formats

REASONS = ("invalid", "wrong_answer", "too_long", "duplicate")

Verdict = tuple[str | None, str, bytes]  # (drop reason or None, row JSON, digest)


class _RowChecker:
    """Per-process state: the config and (lazily) the tokenizer. One lives in each worker."""

    def __init__(self, cfg: FilterConfig, fmt: str, output_type: str, tokenizer_dir: str | None):
        self.cfg, self.fmt, self.output_type = cfg, fmt, output_type
        self.tokenizer = None
        if cfg.max_length is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def check(self, raw: dict[str, Any]) -> Verdict:
        try:
            row = formats.convert(raw, self.fmt, self.output_type)
        except (formats.FormatError, KeyError, TypeError) as e:
            return "invalid", json.dumps({"error": str(e), "row": raw}, default=str), b""
        row = self._add_system_prompt(row)
        text = json.dumps(row, ensure_ascii=False)
        reason = None
        if self.cfg.verify_answers and not self._answer_ok(row):
            reason = "wrong_answer"
        elif self.tokenizer is not None and self._n_tokens(row) > self.cfg.max_length:
            reason = "too_long"
        return reason, text, hashlib.blake2b(text.encode(), digest_size=16).digest()

    def _add_system_prompt(self, row: dict[str, Any]) -> dict[str, Any]:
        key = "messages" if self.output_type == "dataset" else "prompt"
        return {**row, key: formats.with_system_prompt(row[key], self.cfg.system_prompt)}

    def _answer_ok(self, row: dict[str, Any]) -> bool:
        """Only SFT rows carry both a completion and a reference answer."""
        if self.output_type != "dataset" or "answer" not in row:
            return True
        from psft_orchestrator.data.answers import verify

        completion = next(
            m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"
        )
        return verify(completion, row["answer"])

    def _n_tokens(self, row: dict[str, Any]) -> int:
        if self.output_type == "dataset":
            return self._count(row["messages"], generation_prompt=False)
        if self.output_type == "preference":
            return max(
                self._count(
                    [*row["prompt"], {"role": "assistant", "content": row[side]}],
                    generation_prompt=False,
                )
                for side in ("chosen", "rejected")
            )
        return self._count(row["prompt"], generation_prompt=True)

    def _count(self, messages: list[dict[str, str]], generation_prompt: bool) -> int:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


_WORKER: _RowChecker | None = None


def _init_worker(cfg_json: str, fmt: str, output_type: str, tokenizer_dir: str | None) -> None:
    global _WORKER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER = _RowChecker(
        FilterConfig.model_validate_json(cfg_json), fmt, output_type, tokenizer_dir
    )


def _check_chunk(rows: list[dict[str, Any]]) -> list[Verdict]:
    assert _WORKER is not None
    return [_WORKER.check(r) for r in rows]


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _verdicts(
    rows: Iterator[dict[str, Any]],
    cfg: FilterConfig,
    fmt: str,
    output_type: str,
    tokenizer_dir: str | None,
) -> Iterator[Verdict]:
    """Verdicts in source order, from a bounded pool of worker processes (or in-process for 1 worker)."""
    workers = cfg.num_workers or os.cpu_count() or 1
    if workers == 1:
        checker = _RowChecker(cfg, fmt, output_type, tokenizer_dir)
        for raw in rows:
            yield checker.check(raw)
        return
    ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
    if ctx.get_start_method() == "fork":  # import once here; forked workers inherit the modules
        if cfg.max_length is not None:
            from transformers import AutoTokenizer  # noqa: F401
        if cfg.verify_answers:  # the first call builds Math-Verify's LaTeX parser (seconds)
            from psft_orchestrator.data.answers import verify

            verify("\\boxed{1}", "1")
    init_args = (cfg.model_dump_json(), fmt, output_type, tokenizer_dir)
    with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        pending: deque = deque()
        for chunk in _chunks(rows, cfg.chunk_size):
            pending.append(pool.apply_async(_check_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def filter_file(
    source: str | Path,
    out_path: str | Path,
    cfg: FilterConfig,
    output_type: str,
    tokenizer_dir: str | None = None,
    dropped_path: str | Path | None = None,
    fmt: str | None = None,
) -> dict[str, Any]:
    """Filter `source` into `out_path` (written atomically); return the counts per drop reason."""
    if cfg.max_length is not None and tokenizer_dir is None:
        raise ValueError(
            "filter: max_length needs a `model` input (its tokenizer measures the length)"
        )
    rows = formats.iter_rows(source)
    if cfg.limit is not None:
        rows = itertools.islice(rows, cfg.limit)
    first = next(rows, None)
    if first is None:
        raise ValueError(f"filter: {source} has no rows")
    fmt = fmt or cfg.input_format
    if fmt == "auto":
        fmt = formats.detect_format(first)
    rows = itertools.chain([first], rows)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    counts: Counter[str] = Counter()
    samples: dict[str, list[str]] = {r: [] for r in REASONS}
    seen: set[bytes] = set()
    t0 = time.perf_counter()
    with tmp.open("w") as out:
        for reason, text, digest in _verdicts(rows, cfg, fmt, output_type, tokenizer_dir):
            counts["rows_in"] += 1
            if reason is None and cfg.dedupe:
                if digest in seen:
                    reason = "duplicate"
                else:
                    seen.add(digest)
            if reason is None:
                out.write(text + "\n")
                counts["rows_kept"] += 1
                continue
            counts[f"dropped_{reason}"] += 1
            if len(samples[reason]) < cfg.keep_dropped_samples:
                samples[reason].append(text)
    os.replace(tmp, out_path)
    if dropped_path is not None:
        with Path(dropped_path).open("w") as f:
            for reason, texts in samples.items():
                for text in texts:
                    f.write(
                        json.dumps({"reason": reason, "row": json.loads(text)}, ensure_ascii=False)
                        + "\n"
                    )
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"rows_in": counts["rows_in"], "rows_kept": counts["rows_kept"]}
    result.update({f"dropped_{r}": counts[f"dropped_{r}"] for r in REASONS})
    result.update(
        input_format=fmt,
        seconds=round(seconds, 3),
        rows_per_s=round(counts["rows_in"] / max(seconds, 1e-9), 1),
    )
    return result


def run_filter(job: Job) -> dict[str, Any]:
    """Backend entry point of the `filter` stage: writes the output rows, metrics row 0 and summary."""
    cfg = config_for(job, FilterConfig)
    source = job.input("data")
    tokenizer_dir = job.input("model").path if "model" in job.inputs else None
    fmt = (
        cfg.input_format
        if cfg.input_format != "auto"
        else (source.format if source.format != "auto" else None)
    )
    result = filter_file(
        source.path,
        job.output_path(),
        cfg,
        job.output_type,
        tokenizer_dir=tokenizer_dir,
        dropped_path=job.out / "dropped_samples.jsonl",
        fmt=fmt,
    )
    numbers = {k: v for k, v in result.items() if isinstance(v, int | float)}
    with MetricsWriter(job.out / "metrics.jsonl") as metrics:
        metrics.log(0, **numbers)
    (job.out / "summary.json").write_text(json.dumps(result, indent=2))
    return result
