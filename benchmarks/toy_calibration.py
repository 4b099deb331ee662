"""Calibrate the toy world: pretrain a toy model on the corpus, then score the base model.

    python benchmarks/toy_calibration.py            # the demo defaults (stages/toy/pretrain.yaml)
    python benchmarks/toy_calibration.py --steps 600 --batch 16 --layers 4 --quick

Prints the pretraining wall and CPU time, the loss curve, and greedy-decoding scores of the
pretrained base: exact match per OOD skill (with the score of always giving the most common
answer, a "did not read the prompt" baseline), IFEval strict/loose for the format instructions,
and \\boxed{} answer accuracy per math level. docs/toy-world.md records the numbers.
Model-shape flags (--hidden, --layers, ...) override the named --size for experiments.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from psft_orchestrator.data.toy import model as toy_model
from psft_orchestrator.data.toy.checks import check
from psft_orchestrator.data.toy.skills import SKILLS
from psft_orchestrator.data.toy.tasks import generate, write_toy_data
from psft_orchestrator.training.config import PretrainConfig
from psft_orchestrator.training.pretrain import pretrain

# The demo's pretrain preset (stages/toy/pretrain.yaml) and corpus size (specs/demo.yaml).
_PRESET = yaml.safe_load((Path(__file__).parents[1] / "stages/toy/pretrain.yaml").read_text())
DEFAULTS = dict(docs=20000, steps=_PRESET["max_steps"], batch=_PRESET["train_batch_size"],
                max_length=_PRESET["max_length"], lr=_PRESET["lr"], warmup=_PRESET["warmup_ratio"])  # fmt: skip


def boxed(text: str) -> str | None:
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1].strip() if m else None


@torch.no_grad()
def greedy(
    model, tok, prompts: list[list[dict]], max_new_tokens: int, batch: int = 64
) -> list[str]:
    tok.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch):
        texts = [
            tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts[i : i + batch]
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def score(model_dir: Path, n: int, seed: int = 123, quick: bool = False) -> dict[str, float]:
    """Greedy scores (%) of the model; `quick` skips IFEval and math levels 2-3."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    res: dict[str, float] = {}
    for skill in sorted(SKILLS):
        rows = list(generate("ood_bench", n, seed, skill=skill))
        outs = greedy(model, tok, [r["prompt"] for r in rows], 24)
        res[skill] = round(
            100 * sum(o.strip() == r["answer"] for o, r in zip(outs, rows, strict=True)) / n, 1
        )
        # Blind baseline: always answer the most common answer of the benchmark.
        res[f"{skill}_majority"] = round(
            100 * Counter(r["answer"] for r in rows).most_common(1)[0][1] / n, 1
        )
    if not quick:
        rows = list(generate("ifeval_bench", n, seed))
        outs = greedy(model, tok, [r["prompt"] for r in rows], 32)
        verdicts = [check(o, r["checks"]) for o, r in zip(outs, rows, strict=True)]
        res["ifeval_strict"] = round(100 * sum(s for s, _ in verdicts) / n, 1)
        res["ifeval_loose"] = round(100 * sum(lo for _, lo in verdicts) / n, 1)
    for level in (1,) if quick else (1, 2, 3):
        rows = list(generate("math_bench", n, seed, level=level))
        outs = greedy(model, tok, [r["prompt"] for r in rows], 160)
        res[f"math_l{level}"] = round(
            100 * sum(boxed(o) == r["answer"] for o, r in zip(outs, rows, strict=True)) / n, 1
        )
        res[f"math_l{level}_boxed"] = round(100 * sum(boxed(o) is not None for o in outs) / n, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    for k in ("hidden", "layers", "heads", "kv", "mlp"):
        ap.add_argument(f"--{k}", type=int, default=None)
    ap.add_argument("--rope-theta", type=float, default=None)
    ap.add_argument("--docs", type=int, default=DEFAULTS["docs"])
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--max-length", type=int, default=DEFAULTS["max_length"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--warmup", type=float, default=DEFAULTS["warmup"])
    ap.add_argument("--math-share", type=float, default=None)
    ap.add_argument("--ifeval-share", type=float, default=None)
    ap.add_argument("--copy-share", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning)")
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="skip IFEval and math levels 2-3")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    shape = dict(toy_model.SIZES[args.size])
    for k, key in (("hidden", "hidden_size"), ("layers", "num_hidden_layers"),
                   ("heads", "num_attention_heads"), ("kv", "num_key_value_heads"),
                   ("mlp", "intermediate_size")):  # fmt: skip
        if getattr(args, k) is not None:
            shape[key] = getattr(args, k)
    toy_model.SIZES["_calib"] = shape
    work = args.out or Path(tempfile.mkdtemp(prefix="toy-calib-"))
    init = toy_model.make_tiny_model(work / "init", "_calib", seed=0)
    if args.rope_theta is not None:
        cfg_path = init / "config.json"
        c = json.loads(cfg_path.read_text())
        c["rope_theta"] = args.rope_theta
        cfg_path.write_text(json.dumps(c))
    params = {k: v for k, v in (("math_share", args.math_share), ("ifeval_share", args.ifeval_share),
                                ("copy_share", args.copy_share)) if v is not None}  # fmt: skip
    corpus = write_toy_data("corpus", args.docs, 0, work / "corpus.jsonl", **params)
    cfg = PretrainConfig(max_steps=args.steps, train_batch_size=args.batch, micro_batch_size=args.batch,
                         max_length=args.max_length, lr=args.lr, warmup_ratio=args.warmup,
                         log_every=max(1, args.steps // 10))  # fmt: skip
    t0, c0 = time.time(), time.process_time()
    summary = pretrain(cfg, init, corpus, work / "base", work / "metrics.jsonl")
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "shape": shape,
                      "pretrain_wall_s": round(time.time() - t0, 1),
                      "pretrain_cpu_s": round(time.process_time() - c0, 1), **summary}), flush=True)  # fmt: skip
    curve = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    print(
        json.dumps(
            {"loss": [(m.get("step"), round(m.get("loss", float("nan")), 3)) for m in curve]}
        )
    )
    t0 = time.time()
    res = score(work / "base", args.n_eval, quick=args.quick)
    print(json.dumps({"eval_s": round(time.time() - t0, 1), **res}), flush=True)


if __name__ == "__main__":
    main()
