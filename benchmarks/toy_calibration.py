"""Calibrate the toy world: pretrain a toy model on the corpus, score the base, fine-tune it on
toy math with the demo's presets and score again.

    python benchmarks/toy_calibration.py --seed 1                 # pretrain + base scores
    python benchmarks/toy_calibration.py --seed 1 --train sft:2,psft:2,sft:8
    python benchmarks/toy_calibration.py --base DIR --train 'sft:2:{"lr": 1e-4}'

Defaults = stages/toy/pretrain.yaml and specs/demo.yaml's corpus (20 000 documents); `--seed S`
initialises the model with seed S-1 and orders the data with seed S (the demo is seed 1).
`--train KIND:EPOCHS[:JSON overrides]` fine-tunes the base with stages/toy/KIND.yaml on the
demo's math_train (1024 rows) and scores the result. Prints one JSON line per model:
- greedy exact match per OOD skill (`ood_bench`, graded as the eval stage does) with the score
  of always giving the most common answer ("majority", a did-not-read-the-prompt baseline),
  and their mean;
- IFEval strict (greedy);
- math avg@4 (temperature 0.7, top-p 0.95, as the demo) and the share of boxed answers.
The pretraining line has its CPU time. docs/toy-world.md records the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

from psft_orchestrator.configs.training import PretrainConfig
from psft_orchestrator.data.answers import extract_boxed
from psft_orchestrator.data.toy import model as toy_model
from psft_orchestrator.data.toy.checks import check
from psft_orchestrator.data.toy.skills import SKILLS
from psft_orchestrator.data.toy.tasks import generate, write_toy_data
from psft_orchestrator.evals.exact import grade
from psft_orchestrator.evals.generate import SamplingParams, load_model
from psft_orchestrator.evals.generate import generate as sample
from psft_orchestrator.training.loop import train
from psft_orchestrator.training.pretrain import pretrain

STAGES = Path(__file__).parents[1] / "stages/toy"
GREEDY = dict(k=1, temperature=0.0, batch_size=256)


def score(model_dir: Path, n: int, math_n: int = 48) -> dict:
    model, tok = load_model(model_dir)
    res: dict = {}
    for skill in sorted(SKILLS):
        rows = list(generate("ood_bench", n, 123, skill=skill))
        outs = sample(
            model, tok, [r["prompt"] for r in rows], SamplingParams(max_new_tokens=24, **GREEDY)
        )
        right = sum(
            grade(o[0], r["answer"], r.get("choices")) for o, r in zip(outs, rows, strict=True)
        )
        majority = Counter(r["answer"] for r in rows).most_common(1)[0][1]
        res[skill] = {"acc": round(100 * right / n, 1), "majority": round(100 * majority / n, 1)}
    res["ood_mean"] = round(sum(res[s]["acc"] for s in SKILLS) / len(SKILLS), 1)
    rows = list(generate("ifeval_bench", n, 123))
    outs = sample(
        model, tok, [r["prompt"] for r in rows], SamplingParams(max_new_tokens=32, **GREEDY)
    )
    res["ifeval_strict"] = round(
        100 * sum(check(o[0], r["checks"])[0] for o, r in zip(outs, rows, strict=True)) / n, 1
    )
    rows = list(generate("math_bench", math_n, 7))
    params = SamplingParams(k=4, temperature=0.7, top_p=0.95, max_new_tokens=96, batch_size=256)
    outs = sample(model, tok, [r["prompt"] for r in rows], params)
    right = [
        [extract_boxed(o) == r["answer"] for o in os_] for os_, r in zip(outs, rows, strict=True)
    ]
    res["math_avg@4"] = round(100 * sum(sum(c) / len(c) for c in right) / len(right), 1)
    res["math_boxed"] = round(
        100 * sum(extract_boxed(o) is not None for os_ in outs for o in os_) / (4 * math_n), 1
    )
    return res  # fmt: skip


def pretrain_base(args: argparse.Namespace, work: Path) -> Path:
    preset = yaml.safe_load((STAGES / "pretrain.yaml").read_text())
    preset.pop("kind")
    preset.update(
        seed=args.seed, log_every=100, **({"max_steps": args.steps} if args.steps else {})
    )
    init = toy_model.make_tiny_model(work / "init", args.size, seed=args.seed - 1)
    corpus = write_toy_data(
        "corpus", args.docs, 0, work / "corpus.jsonl", **json.loads(args.corpus)
    )
    cpu = time.process_time()
    summary = pretrain(
        PretrainConfig(**preset), init, corpus, work / "base", work / "pretrain.jsonl"
    )
    print(
        json.dumps({"pretrain_cpu_s": round(time.process_time() - cpu, 1), **summary}), flush=True
    )
    return work / "base"


def fine_tune(base: Path, spec: str, seed: int, work: Path) -> Path:
    kind, epochs, *extra = spec.split(":", 2)
    cfg = yaml.safe_load((STAGES / f"{kind}.yaml").read_text())
    cfg.pop("kind")
    cfg.update(
        epochs=float(epochs), seed=seed, log_every=1000, **(json.loads(extra[0]) if extra else {})
    )
    data = write_toy_data("math_sft", 1024, 1, work / "math_train.jsonl")
    out = work / spec.replace(":", "_").replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)
    train(kind, cfg, base, data, out / "model", out / "ckpt", out / "metrics.jsonl")
    return out / "model"  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument(
        "--steps", type=int, default=None, help="pretraining steps (default: the preset's)"
    )
    ap.add_argument(
        "--corpus", default="{}", help="corpus params as JSON, e.g. '{\"copy_share\": 0.1}'"
    )
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="score / fine-tune this model instead of pretraining",
    )
    ap.add_argument("--train", default="", help="comma-separated KIND:EPOCHS[:JSON] fine-tunes")
    ap.add_argument("--n-eval", type=int, default=60, help="items per OOD skill and IFEval")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="toy-calib-"))
    base = args.base or pretrain_base(args, work)
    print(json.dumps({"model": "base", "seed": args.seed, **score(base, args.n_eval)}), flush=True)
    for spec in filter(None, re.split(r",(?![^{]*})", args.train)):  # no split inside {...}
        tuned = fine_tune(base, spec, args.seed, work)
        print(json.dumps({"model": spec, "seed": args.seed, **score(tuned, args.n_eval)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
