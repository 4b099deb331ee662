"""Eval and filter throughput on this machine.

1. Math-suite generation on the toy `tiny` model (random weights, so completions run to the token
   cap, which makes runs comparable): completions/s batched vs one at a time, same prompts.
2. The filter stage on a generated 100k-row problem/solution file (toy arithmetic, with wrong
   answers, over-long rows and duplicates mixed in): rows/s with Math-Verify and token-length
   checks on all cores, and with one worker on a slice for comparison.

    python benchmarks/eval_throughput.py [--rows 100000] [--problems 16] [--k 4] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bench_generation(
    work: Path, problems: int, k: int, max_new_tokens: int, batch_size: int
) -> dict:
    import torch

    from psft_orchestrator.data.toy.arithmetic import SYSTEM_PROMPT, sample_problem
    from psft_orchestrator.data.toy.model import make_tiny_model
    from psft_orchestrator.evals.generate import SamplingParams, as_messages, generate, load_model

    model, tok = load_model(make_tiny_model(work / "tiny", size="tiny", seed=0))
    rng = random.Random(0)
    prompts = [
        as_messages(sample_problem(rng, 3).question(), SYSTEM_PROMPT) for _ in range(problems)
    ]
    out: dict = {
        "problems": problems,
        "k": k,
        "max_new_tokens": max_new_tokens,
        "torch_threads": torch.get_num_threads(),
    }
    for label, bs in (("batched", batch_size), ("one_at_a_time", 1)):
        params = SamplingParams(k=k, max_new_tokens=max_new_tokens, batch_size=bs, seed=0)
        t0 = time.perf_counter()
        completions = generate(model, tok, prompts, params)
        seconds = time.perf_counter() - t0
        n = sum(len(c) for c in completions)
        out[label] = {
            "batch_size": bs,
            "completions": n,
            "seconds": round(seconds, 2),
            "completions_per_s": round(n / seconds, 2),
        }
    out["speedup"] = round(
        out["batched"]["completions_per_s"] / out["one_at_a_time"]["completions_per_s"], 2
    )
    return out


def write_source(path: Path, rows: int) -> None:
    from psft_orchestrator.data.toy.arithmetic import sample_problem

    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(rows):
            p = sample_problem(rng, rng.randint(1, 4))
            r = rng.random()
            if r < 0.1:  # arithmetic slip: wrong final answer
                solution = p.solution(corrupt_step=0, delta=rng.randint(1, 5))
            elif r < 0.15:
                solution = p.solution(style="long") * 8  # over-long
            else:
                solution = p.solution(style=rng.choice(("short", "long")))
            row = {
                "problem": p.question(),
                "solution": solution,
                "answer": str(p.answer),
                "source": "toy",
            }
            f.write(json.dumps(row) + "\n")
            if i % 50 == 0:  # an exact duplicate now and then
                f.write(json.dumps(row) + "\n")


def bench_filter(work: Path, rows: int) -> dict:
    from psft_orchestrator.data.filter import filter_file
    from psft_orchestrator.data.filter_config import FilterConfig
    from psft_orchestrator.data.toy.tokenizer import build_tokenizer

    build_tokenizer(work / "tok")
    source = work / "source.jsonl"
    t0 = time.perf_counter()
    write_source(source, rows)
    out: dict = {
        "generate_source_s": round(time.perf_counter() - t0, 1),
        "source_mb": round(source.stat().st_size / 2**20, 1),
    }
    common = dict(max_length=512, system_prompt="Please reason step by step.")
    result = filter_file(
        source,
        work / "all_cores.jsonl",
        FilterConfig(**common),
        "dataset",
        tokenizer_dir=str(work / "tok"),
    )
    out["all_cores"] = {"workers": os.cpu_count(), **result}
    one = FilterConfig(**common, num_workers=1, limit=min(rows, 10_000))
    result = filter_file(
        source, work / "one.jsonl", one, "dataset", tokenizer_dir=str(work / "tok")
    )
    out["one_worker_first_10k"] = {"workers": 1, **result}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    ap.add_argument("--skip-filter", action="store_true")
    ap.add_argument("--skip-generation", action="store_true")
    args = ap.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    report: dict = {"cpu_count": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_generation:
            report["generation"] = bench_generation(
                work, args.problems, args.k, args.max_new_tokens, args.batch_size
            )
            print(json.dumps({"generation": report["generation"]}, indent=2), flush=True)
        if not args.skip_filter:
            report["filter"] = bench_filter(work, args.rows)
    report["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
