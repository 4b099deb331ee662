"""Throughput of the native trainer's objectives, and of TRL's SFTTrainer for reference.

Trains the same toy model on the same data with SFT, PSFT and DFT (same seed, same sequences per
optimizer step, same number of steps) and prints tokens/s for each, plus the PSFT/SFT time ratio
measured in this run. PSFT's extra cost is the θ_old forward pass (no grad) over mini-batches
2..k of every train batch; the target is PSFT ≤ 1.30 × SFT. Then SFT tokens/s is compared with
TRL's SFTTrainer on the same model, data and batch size (assistant-only loss, no packing).

    python benchmarks/objectives.py [--size tiny] [--steps 32] [--repeats 2] [--threads 1] [--no-trl]

Times are training-loop wall times (model loading and tokenisation excluded), the best of
`--repeats` interleaved runs, so that other load on the machine hurts every objective alike.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path


def write_data(path: Path, n: int, seed: int = 0) -> Path:
    """Chat rows: reverse a few words (responses of ~20-60 tokens with the toy tokenizer)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [
            "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8)))
            for _ in range(rng.randint(2, 6))
        ]
        text = " ".join(words)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "Please reason step by step."},
                    {"role": "user", "content": f"reverse {text}"},
                    {"role": "assistant", "content": f"The answer is {text[::-1]}"},
                ]
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_native(
    kind: str, model: Path, data: Path, root: Path, steps: int, batch: int, ratio: int, micro: int
) -> dict:
    from psft_orchestrator.training.config import DFTConfig, PSFTConfig, SFTConfig
    from psft_orchestrator.training.loop import train

    common = dict(
        lr=1e-4, seed=1, max_steps=steps, micro_batch_size=micro, max_length=512, dtype="float32"
    )
    if kind == "psft":
        # the paper's shape: θ_old refreshed every `ratio` optimizer steps (train batch 256 / mini 32 = 8)
        cfg = PSFTConfig(
            **common, train_batch_size=batch * ratio, mini_batch_size=batch, clipped_tokens_every=0
        )
    elif kind == "dft":
        cfg = DFTConfig(**common, train_batch_size=batch)
    else:
        cfg = SFTConfig(**common, train_batch_size=batch)
    out = root / f"{kind}-{time.monotonic_ns()}"
    return train(kind, cfg, model, data, out / "model", out / "ckpt", out / "metrics.jsonl")


def run_trl(model_dir: Path, data: Path, root: Path, steps: int, batch: int) -> dict:
    """TRL's SFTTrainer, same model/data/batch/steps; tokens/s over the non-pad tokens it trained."""
    # Imported here: trl is optional, and importing it pulls in much of the HF stack.
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    rows = [json.loads(ln) for ln in data.read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = TRLConfig(
        output_dir=str(root / "trl"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        weight_decay=0.1,
        max_grad_norm=1.0,
        assistant_only_loss=True,
        max_length=512,
        packing=False,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        seed=1,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    # tokens it will see: the first steps × batch examples of its (shuffled) order ≈ the mean length
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    t0 = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - t0
    n_tokens = steps * batch * sum(lengths) / len(lengths)
    return {
        "tokens_per_s": n_tokens / elapsed,
        "train_time_s": elapsed,
        "train_loss": result.training_loss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="tiny", choices=["micro", "tiny", "small"])
    ap.add_argument("--steps", type=int, default=32, help="optimizer steps per objective")
    ap.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    ap.add_argument("--ratio", type=int, default=8, help="PSFT mini-batches per train batch")
    ap.add_argument("--micro", type=int, default=8, help="sequences per forward pass")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 avoids OpenMP spinning on a shared box)",
    )
    ap.add_argument("--no-trl", action="store_true")
    args = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from psft_orchestrator.data.toy.model import make_tiny_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "model", size=args.size, seed=0)
        n_rows = max(args.steps * args.batch, args.batch * args.ratio) + args.batch * args.ratio
        data = write_data(root / "data.jsonl", n_rows)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for kind in ("sft", "psft", "dft"):
                s = run_native(
                    kind, model, data, root, args.steps, args.batch, args.ratio, args.micro
                )
                if kind not in best or s["train_time_s"] < best[kind]["train_time_s"]:
                    best[kind] = s
        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        print(
            f"model {args.size}, {args.steps} steps × {args.batch} sequences, micro {args.micro}, "
            f"PSFT train batch {args.batch * args.ratio} (θ_old every {args.ratio} steps), {device}, "
            f"best of {args.repeats}"
        )
        for kind, s in best.items():
            print(
                f"  native {kind:5s} {s['tokens_per_s']:9.0f} tokens/s  {s['train_time_s']:6.2f} s  final loss {s['final_loss']:.4f}"
            )
        ratio = best["psft"]["train_time_s"] / best["sft"]["train_time_s"]
        print(
            f"  PSFT/SFT time ratio {ratio:.3f}  (target ≤ 1.30: {'ok' if ratio <= 1.30 else 'MISSED'})"
        )
        print(
            f"  DFT/SFT  time ratio {best['dft']['train_time_s'] / best['sft']['train_time_s']:.3f}"
        )
        if not args.no_trl:
            t = run_trl(model, data, root, args.steps, args.batch)
            print(
                f"  TRL SFTTrainer  {t['tokens_per_s']:9.0f} tokens/s  {t['train_time_s']:6.2f} s  "
                f"(native SFT / TRL = {best['sft']['tokens_per_s'] / t['tokens_per_s']:.2f}×)"
            )


if __name__ == "__main__":
    main()
