"""vLLM on CPU against the native generation path, and the judge's request rate, in one run.

1. Completions/s of the toy `tiny` model (random weights: answers run to the token cap, so runs
   are comparable) on the same toy prompts: native HF `generate` (batched) in this process, then
   vLLM's offline engine in the vLLM environment (its start-up time printed apart).
2. Judge requests/s through `vllm serve` (the same model as judge, replies capped), with 1 and
   with 8 requests in flight.

Numbers are ratios within this run; on a shared machine, say what else was running.

    python benchmarks/eval_throughput_vllm.py [--prompts 32] [--max-new-tokens 64] [--judge-requests 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VLLM_SIDE = """
import json, sys, time
from psft_orchestrator.backends.vllm import load
from psft_orchestrator.evals.generate import SamplingParams
t0 = time.time()
gen, tok = load(sys.argv[1])
started = time.time() - t0
prompts = json.loads(open(sys.argv[2]).read())
params = SamplingParams(k=1, temperature=0.0, max_new_tokens=int(sys.argv[3]), batch_size=len(prompts))
t1 = time.time()
out = gen.complete(prompts, params, tok)
print(json.dumps({"startup_s": started, "gen_s": time.time() - t1, "n": len(out)}))
"""


def _prompts(n: int) -> list:
    from psft_orchestrator.data.toy.tasks import generate
    from psft_orchestrator.evals.generate import as_messages

    return [as_messages(r["prompt"]) for r in generate("ifeval_bench", n, seed=7)]


def bench_native(model: Path, prompts: list, max_new_tokens: int) -> dict:
    from psft_orchestrator.evals.generate import SamplingParams, generate, load_model

    m, tok = load_model(model)
    # One batch of every prompt, as vLLM gets them (the demo's suites use batch_size 256).
    params = SamplingParams(
        k=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=len(prompts)
    )
    t0 = time.time()
    generate(m, tok, prompts, params)
    return {"gen_s": time.time() - t0, "n": len(prompts)}


def bench_vllm(python: str, model: Path, prompts: list, max_new_tokens: int, work: Path) -> dict:
    path = work / "prompts.json"
    path.write_text(json.dumps(prompts))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [python, "-c", VLLM_SIDE, str(model), str(path), str(max_new_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_judge(python: str, model: Path, requests: int, work: Path) -> dict:
    from psft_orchestrator.evals.judge_api import ApiChat, vllm_server

    prompts = [[{"role": "user", "content": f"Rate answer {i}."}] for i in range(requests)]
    rates = {}
    args = ["--max-model-len", "1024", "--gpu-memory-utilization", "0.2"]  # of CPU memory here
    with vllm_server(str(model), python, work / "serve.log", extra_args=args) as url:
        for concurrency in (1, 8):
            chat = ApiChat(url, str(model), concurrency=concurrency, max_tokens=16)
            chat(prompts[:2])  # warm-up
            t0 = time.time()
            chat(prompts)
            rates[concurrency] = requests / (time.time() - t0)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--judge-requests", type=int, default=32)
    args = p.parse_args()
    from psft_orchestrator.data.toy.model import make_tiny_model
    from psft_orchestrator.envs import vllm_python

    python = vllm_python()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        work = Path(tmp)
        model = make_tiny_model(work / "tiny", size="tiny", seed=0)
        prompts = _prompts(args.prompts)
        native = bench_native(model, prompts, args.max_new_tokens)
        vllm = bench_vllm(python, model, prompts, args.max_new_tokens, work)
        judge = bench_judge(python, model, args.judge_requests, work)
    n_rate, v_rate = native["n"] / native["gen_s"], vllm["n"] / vllm["gen_s"]
    print(f"prompts={args.prompts} max_new_tokens={args.max_new_tokens} (greedy, toy tiny model)")
    print(f"load average at start {load_at_start}, at end {os.getloadavg()}")
    print(f"native  completions/s: {n_rate:8.2f}")
    print(
        f"vLLM    completions/s: {v_rate:8.2f}  (x{v_rate / n_rate:.2f} native; start-up {vllm['startup_s']:.1f} s)"
    )
    print(
        f"judge requests/s, concurrency 1: {judge[1]:.2f}; concurrency 8: {judge[8]:.2f} (x{judge[8] / judge[1]:.2f})"
    )


if __name__ == "__main__":
    main()
