"""Calibrate the toy world: pretrain a toy model on the corpus, then score the base model.

    python benchmarks/toy_calibration.py --size tiny --docs 20000 --steps 300

Prints the pretraining time and greedy-decoding scores of the pretrained base per skill:
exact match for the OOD skills, IFEval strict/loose for the format instructions, and
\\boxed{} answer accuracy per math level. docs/toy-world.md records the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from psft_orchestrator.data.toy.checks import check
from psft_orchestrator.data.toy.model import make_tiny_model
from psft_orchestrator.data.toy.skills import SKILLS
from psft_orchestrator.data.toy.tasks import generate, write_toy_data
from psft_orchestrator.training.config import PretrainConfig
from psft_orchestrator.training.pretrain import pretrain


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


def score(model_dir: Path, n: int, seed: int = 123) -> dict[str, float]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    res: dict[str, float] = {}
    for skill in sorted(SKILLS):
        rows = list(generate("ood_bench", n, seed, skill=skill))
        outs = greedy(model, tok, [r["prompt"] for r in rows], 24)
        res[skill] = (
            100 * sum(o.strip() == r["answer"] for o, r in zip(outs, rows, strict=True)) / n
        )
    rows = list(generate("ifeval_bench", n, seed))
    outs = greedy(model, tok, [r["prompt"] for r in rows], 32)
    verdicts = [check(o, r["checks"]) for o, r in zip(outs, rows, strict=True)]
    res["ifeval_strict"] = 100 * sum(s for s, _ in verdicts) / n
    res["ifeval_loose"] = 100 * sum(lo for _, lo in verdicts) / n
    for level in (1, 2, 3):
        rows = list(generate("math_bench", n, seed, level=level))
        outs = greedy(model, tok, [r["prompt"] for r in rows], 160)
        res[f"math_l{level}"] = (
            100 * sum(boxed(o) == r["answer"] for o, r in zip(outs, rows, strict=True)) / n
        )
        res[f"math_l{level}_boxed"] = 100 * sum(boxed(o) is not None for o in outs) / n
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--math-share", type=float, default=0.15)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="toy-calib-"))
    init = make_tiny_model(work / "init", args.size, seed=0)
    corpus = write_toy_data(
        "corpus", args.docs, 0, work / "corpus.jsonl", math_share=args.math_share
    )
    cfg = PretrainConfig(max_steps=args.steps, train_batch_size=args.batch, micro_batch_size=args.batch,
                         max_length=args.max_length, lr=args.lr)  # fmt: skip
    t0 = time.time()
    summary = pretrain(cfg, init, corpus, work / "base", work / "metrics.jsonl")
    print(json.dumps({"pretrain_s": round(time.time() - t0, 1), **summary}))
    t0 = time.time()
    res = score(work / "base", args.n_eval)
    print(json.dumps({"eval_s": round(time.time() - t0, 1), **res}))


if __name__ == "__main__":
    main()
