"""Eval and filter throughput on this machine.

1. Generation on the demo's eval suites (specs/demo.yaml `vars.suites`: math k=4 sampled, OOD and
   IFEval greedy), completions/s of the new path (`evals.generate.generate`: length-grouped
   batches, a plain KV-cache decode loop, finished rows dropped) at the demo's batch sizes,
   against the previous path (`generate_reference`: HF `model.generate`, batches in prompt
   order) at the batch sizes the demo used before (48 / 50 / 40), in the same process, and the
   new path at those old batch sizes (what the loop alone buys). Each runs `--repeats` times,
   interleaved, and the median is kept (the machine is shared: its load moves during a run).
   Greedy suites must give identical completions on both paths; the script checks it.
   The model is a toy model pretrained for `--pretrain-steps` steps here (so that, like the
   demo's models, it stops its answers), or `--model DIR`.
   Then an eval node's fixed costs: its phases (imports, model load, each suite with grading)
   in a fresh interpreter, and a whole node (`backends.worker` on the demo's suites).
2. The filter stage on a generated 100k-row problem/solution file (toy arithmetic, with wrong
   answers, over-long rows and duplicates mixed in): rows/s with Math-Verify and token-length
   checks on all cores, and with one worker on a slice for comparison.

    python benchmarks/eval_throughput.py --skip-filter [--model DIR] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from statistics import median

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO = Path(__file__).parents[1] / "specs/demo.yaml"
OLD_BATCH_SIZES = {"math": 48, "ood": 50, "ifeval": 40}  # specs/demo.yaml before the new path


def quick_base(work: Path, steps: int) -> Path:
    """A tiny toy model pretrained briefly on the toy corpus: it answers and stops, as the
    demo's models do (a random model would always run to the token cap)."""
    from psft_orchestrator.configs.training import PretrainConfig
    from psft_orchestrator.data.toy.model import make_tiny_model
    from psft_orchestrator.data.toy.tasks import write_toy_data
    from psft_orchestrator.training.pretrain import pretrain

    preset = yaml.safe_load((DEMO.parents[1] / "stages/toy/pretrain.yaml").read_text())
    preset.pop("kind")
    preset.update(max_steps=steps, log_every=steps)
    init = make_tiny_model(work / "init", size="tiny", seed=0)
    corpus = write_toy_data("corpus", 4000, 0, work / "corpus.jsonl")
    pretrain(PretrainConfig(**preset), init, corpus, work / "base", work / "metrics.jsonl")
    return work / "base"


def demo_suites(work: Path) -> list[tuple[object, list[list[dict]]]]:
    """(suite, prompts) for each suite of the demo, its benchmark generated as the demo does."""
    from pydantic import TypeAdapter

    from psft_orchestrator.configs.evals import Suite
    from psft_orchestrator.data.toy.tasks import write_toy_data
    from psft_orchestrator.evals.generate import as_messages
    from psft_orchestrator.evals.records import read_benchmark

    spec = yaml.safe_load(DEMO.read_text())
    out = []
    for raw in spec["vars"]["suites"]:
        suite = TypeAdapter(Suite).validate_python(raw)
        prompts = []
        for name in suite.benchmarks:
            d = spec["datasets"][name]
            path = write_toy_data(
                d["toy"], d["n"], d["seed"], work / f"{name}.jsonl", **d.get("params", {})
            )
            prompts += [as_messages(r["prompt"], suite.system_prompt) for r in read_benchmark(path)]
        out.append((suite, prompts))
    return out


def bench_generation(work: Path, model_dir: Path | None, pretrain_steps: int, repeats: int) -> dict:
    """Each path on each suite `repeats` times, interleaved, timed in CPU seconds of this process
    (one torch thread, as an eval node runs: other processes on a shared machine barely move it)
    and in wall seconds; the median of each is reported, speed-ups from CPU seconds."""
    import torch

    from psft_orchestrator.evals import generate as g

    model, tok = g.load_model(model_dir or quick_base(work, pretrain_steps))
    report: dict = {"torch_threads": torch.get_num_threads(), "repeats": repeats, "suites": {}}
    totals = {label: [0, 0.0, 0.0] for label in ("reference", "new_old_batch", "new")}
    for suite, prompts in demo_suites(work):
        runs = suite_runs(g, suite)
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in runs}
        outputs = {}
        for _ in range(repeats):
            for label, (fn, p) in runs.items():
                cpu, wall = time.process_time(), time.perf_counter()
                outputs[label] = fn(model, tok, prompts, p)
                times[label].append((time.process_time() - cpu, time.perf_counter() - wall))
        n = len(prompts) * suite.k
        row: dict = {"prompts": len(prompts), "k": suite.k, "max_new_tokens": suite.max_new_tokens}
        for label, (_, p) in runs.items():
            cpu, wall = (median([t[i] for t in times[label]]) for i in (0, 1))
            totals[label] = [totals[label][0] + n, totals[label][1] + cpu, totals[label][2] + wall]
            row[label] = {"batch_size": p.batch_size, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                          "completions_per_cpu_s": round(n / cpu, 1)}  # fmt: skip
        row["speedup"] = round(row["reference"]["cpu_s"] / row["new"]["cpu_s"], 2)
        if suite.temperature == 0:
            row["greedy_identical"] = outputs["new"] == outputs["reference"]
        report["suites"][suite.label] = row
    report["all_suites_completions_per_cpu_s"] = {
        k: round(n / c, 1) for k, (n, c, _) in totals.items()
    }
    report["speedup_new_vs_reference"] = round(totals["reference"][1] / totals["new"][1], 2)
    report["speedup_loop_only"] = round(totals["reference"][1] / totals["new_old_batch"][1], 2)
    report["speedup_wall"] = round(totals["reference"][2] / totals["new"][2], 2)
    return report


def suite_runs(g, suite) -> dict:
    """label -> (generation function, its sampling params) for one suite."""
    params = g.sampling_params(suite)
    old = g.SamplingParams(**{**params.__dict__, "batch_size": OLD_BATCH_SIZES[suite.label]})
    return {"reference": (g.generate_reference, old), "new_old_batch": (g.generate, old),
            "new": (g.generate, params)}  # fmt: skip


# An eval node's phases, timed in a fresh interpreter as the worker runs them (one thread).
NODE_PHASES = """
import json, sys, time
t = (time.process_time(), time.perf_counter())
phases = {}
def mark(name):  # CPU seconds, wall seconds
    global t
    now = (time.process_time(), time.perf_counter())
    phases[name] = [round(now[0] - t[0], 2), round(now[1] - t[1], 2)]; t = now
import torch; torch.set_num_threads(1); mark("import torch")
from psft_orchestrator.evals.run import evaluate_model; mark("import the eval code")
from transformers import AutoModelForCausalLM, AutoTokenizer; mark("import transformers")
from psft_orchestrator.evals.generate import load_model
model, tok = load_model(sys.argv[1]); mark("load model + tokenizer (transformers' lazy imports)")
import math_verify; mark("import math_verify")
suites, benchmarks = json.loads(open(sys.argv[2]).read())
for suite in suites:
    evaluate_model(model, tok, [suite], benchmarks); mark("suite " + suite["name"])
print(json.dumps(phases))
"""


def bench_node(work: Path, model_dir: Path) -> dict:
    """An eval node's fixed costs (imports, model load) beside its suites, and a whole node
    (`backends.worker` on a job with the demo's suites) from start to exit."""
    import subprocess
    import sys

    from psft_orchestrator.contract import InputRef, Job

    spec = yaml.safe_load(DEMO.read_text())
    suites = spec["vars"]["suites"]
    benchmarks = {name: str(work / f"{name}.jsonl") for s in suites for name in s["benchmarks"]}
    (work / "node_inputs.json").write_text(json.dumps([suites, benchmarks]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", NODE_PHASES, str(model_dir), str(work / "node_inputs.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    phases = json.loads(out.stdout.strip().splitlines()[-1])
    refs = [InputRef(type="benchmark", path=p, name=n) for n, p in benchmarks.items()]
    job = Job(
        node_id="eval", stage="eval", kind="eval", backend="native", fingerprint="0" * 64,
        config={"suites": suites}, node_dir=str(work / "node"), checkpoint_dir=str(work / "ckpt"),
        inputs={"model": InputRef(type="model", path=str(model_dir)), "benchmarks": refs},
        output_type="eval",
    )  # fmt: skip
    job.out.mkdir(parents=True, exist_ok=True)
    job.save(work / "job.json")
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu, wall = children_cpu(), time.perf_counter()
    worker = [sys.executable, "-m", "psft_orchestrator.backends.worker", str(work / "job.json")]
    subprocess.run(worker, capture_output=True, env=env, check=True)
    return {
        "phases_cpu_s_wall_s": phases,
        "whole_node_cpu_s": round(children_cpu() - cpu, 2),
        "whole_node_wall_s": round(time.perf_counter() - wall, 2),
    }


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
    from psft_orchestrator.configs.filter import FilterConfig
    from psft_orchestrator.data.filter import filter_file
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
    ap.add_argument("--model", type=Path, default=None, help="model dir (default: pretrain one)")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs of each path (median kept)")
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
                work, args.model, args.pretrain_steps, args.repeats
            )
            print(json.dumps({"generation": report["generation"]}, indent=2), flush=True)
            model = args.model or work / "base"
            report["eval_node"] = bench_node(work, model)
            print(json.dumps({"eval_node": report["eval_node"]}, indent=2), flush=True)
        if not args.skip_filter:
            report["filter"] = bench_filter(work, args.rows)
    report["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
