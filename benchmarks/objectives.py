"""Throughput of the native trainer's objectives, and of TRL's SFTTrainer for reference.

Trains the same toy model on the same data with SFT, PSFT and DFT (same seed, same sequences per
optimizer step, same number of steps) and prints tokens/s for each, plus the PSFT/SFT time ratio
measured in this run. PSFT's extra cost is the θ_old forward pass (no grad) over mini-batches
2..k of every train batch; the target is PSFT ≤ 1.30 × SFT. Then SFT tokens/s is compared with
TRL's SFTTrainer on the same model, data and batch size (assistant-only loss, no packing).

    python benchmarks/objectives.py [--size tiny] [--steps 32] [--min-seconds 20] [--threads 1] [--no-trl]

Times are training-loop wall times (model loading and tokenisation excluded). The objectives run
interleaved (sft, psft, dft, sft, psft, dft, ...) until each has run at least `--min-seconds` in
total and `--min-repeats` times, so other load on the machine hurts every objective alike. Each
round gives one PSFT/SFT and one DFT/SFT ratio (the runs of one round are seconds apart); the
median of those ratios is printed with their spread (min-max and interquartile range).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
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
    from psft_orchestrator.configs.training import DFTConfig, PSFTConfig, SFTConfig
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


def spread(values: list[float]) -> str:
    """median [q1, q3] (min-max) of a list of ratios."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.3f}  IQR [{q[0]:.3f}, {q[2]:.3f}]  range [{min(values):.3f}, {max(values):.3f}]"


def interleaved_runs(args, model: Path, data: Path, root: Path) -> dict[str, list[dict]]:
    """Rounds of sft, psft, dft until each objective ran >= min_seconds and >= min_repeats times."""
    runs: dict[str, list[dict]] = {"sft": [], "psft": [], "dft": []}

    def done() -> bool:
        return all(
            len(r) >= args.min_repeats and sum(s["train_time_s"] for s in r) >= args.min_seconds
            for r in runs.values()
        )

    while not done():
        for kind in runs:
            s = run_native(kind, model, data, root, args.steps, args.batch, args.ratio, args.micro)
            runs[kind].append(s)
    return runs


def report(args, runs: dict[str, list[dict]], device: str) -> None:
    n = len(runs["sft"])
    print(
        f"model {args.size}, {args.steps} steps × {args.batch} sequences, micro {args.micro}, "
        f"PSFT train batch {args.batch * args.ratio} (θ_old every {args.ratio} steps), {device}, "
        f"{n} interleaved rounds"
    )
    for kind, rs in runs.items():
        times = [s["train_time_s"] for s in rs]
        print(
            f"  native {kind:5s} median {statistics.median(times):6.2f} s "
            f"(range {min(times):.2f}-{max(times):.2f}, total {sum(times):.1f} s)  "
            f"{statistics.median(s['tokens_per_s'] for s in rs):9.0f} tokens/s  "
            f"final loss {rs[-1]['final_loss']:.4f}"
        )
    for kind in ("psft", "dft"):
        ratios = [
            a["train_time_s"] / b["train_time_s"]
            for a, b in zip(runs[kind], runs["sft"], strict=True)
        ]
        target = "  (target ≤ 1.30 at the median)" if kind == "psft" else ""
        print(f"  {kind.upper()}/SFT time ratio {spread(ratios)}{target}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="tiny", choices=["micro", "tiny", "small"])
    ap.add_argument("--steps", type=int, default=32, help="optimizer steps per objective")
    ap.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    ap.add_argument("--ratio", type=int, default=8, help="PSFT mini-batches per train batch")
    ap.add_argument("--micro", type=int, default=8, help="sequences per forward pass")
    ap.add_argument("--min-seconds", type=float, default=20.0, help="total run time per objective")
    ap.add_argument("--min-repeats", type=int, default=5, help="at least this many rounds")
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
        runs = interleaved_runs(args, model, data, root)
        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        report(args, runs, device)
        if not args.no_trl:
            sft_tps = statistics.median(s["tokens_per_s"] for s in runs["sft"])
            t = run_trl(model, data, root, args.steps, args.batch)
            print(
                f"  TRL SFTTrainer  {t['tokens_per_s']:9.0f} tokens/s  {t['train_time_s']:6.2f} s  "
                f"(native SFT / TRL = {sft_tps / t['tokens_per_s']:.2f}×)"
            )


if __name__ == "__main__":
    main()
