"""The native trainer for the SFT family (SFT, SFT-KL, PSFT (+warm-up, -Ent), DFT, iw-SFT).

One loop, read top to bottom: `train()` loads the model, data and (if needed) a frozen reference
copy, then walks over *train batches*. Paper batching (methods.md, PSFT): per train batch,

  1. reference log-probs (SFT-KL, iw-SFT, PSFT with old_policy="initial") are computed once,
     without grad, under the frozen initial model;
  2. θ_old log-probs (PSFT) are computed once, without grad, for the mini-batches 2..k under the
     current weights *before* any update of this train batch. The first PSFT mini-batch has
     ratio 1 by definition, so it uses `logp.detach()` and costs nothing extra;
  3. the train batch is split into mini-batches with one AdamW step each (grad-norm clip,
     scheduler step), each mini-batch processed as micro-batches with gradient accumulation.
     Every micro-batch loss is divided by the *mini-batch's* denominator (e.g. its total number
     of response tokens), so accumulation is exact, not a mean of micro-batch means.

PSFT warm-up: the first `warmup_sft_steps` optimizer steps are plain SFT; PSFT starts from there
(its θ_old is taken at the first PSFT step, so that step has ratio 1 too). PSFT-Ent: only the
top `entropy_top_frac` of the train batch's response tokens by θ_old's entropy are trained.

Files: the final HF model + tokenizer in `out_dir`; one metrics row per `log_every` steps in
`metrics_path`; every `clipped_tokens_every` steps (PSFT) a row `{"step", "clipped_tokens":
[[token, count], ...], "clipped_total"}` with the most-clipped tokens *since the previous row* in
`clipped_tokens.jsonl` next to `metrics_path`; resumable checkpoints `checkpoint_dir/step_XXXXXXXX/`
(`model/` HF dir + `trainer_state.pt`: optimizer, scheduler, RNG, data position, θ_old cache).
A restarted run resumes from the latest one and gives the same weights as an uninterrupted run.

Precision: weights and optimizer state stay fp32; bf16 is used through autocast for the
forward/backward when supported. (Pure bf16 weights would swallow PSFT's 1e-6 updates: bf16 has
~3 significant digits.) Log-probs and entropies are always computed in fp32.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from psft_orchestrator.contract import (
    CLIPPED_TOKENS_FILE,
    CLIPPED_TOKENS_KEY,
    MetricsWriter,
    write_progress,
)
from psft_orchestrator.training import losses as L
from psft_orchestrator.training.config import (
    DFTConfig,
    IWSFTConfig,
    PSFTConfig,
    SFTConfig,
    TrainConfig,
)
from psft_orchestrator.training.data import (
    batches_per_epoch,
    collate,
    load_chat_dataset,
    split_batch,
    train_batches,
)
from psft_orchestrator.training.optim import build_optimizer, build_scheduler

CONFIGS: dict[str, type[TrainConfig]] = {
    "sft": SFTConfig,
    "psft": PSFTConfig,
    "dft": DFTConfig,
    "iwsft": IWSFTConfig,
}
TOP_CLIPPED = 50


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became inf/nan; the last good checkpoint is left in place."""


# ----------------------------------------------------------------------------- small helpers


def _amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. auto = bf16 on a GPU that supports it."""
    if choice == "float32":
        return None
    if choice == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _freeze(model: torch.nn.Module, patterns: list[str]) -> int:
    """Set requires_grad=False on parameters whose name matches any regex; return how many."""
    n = 0
    for pat in patterns:
        hits = [p for name, p in model.named_parameters() if re.search(pat, name)]
        if not hits:
            raise ValueError(f"freeze pattern {pat!r} matches no parameter name")
        for p in hits:
            p.requires_grad_(False)
            n += p.numel()
    return n


def _load_model(path: Path, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config.use_cache = False  # training never decodes; the KV cache only costs memory
    return model.to(device)


def save_model_dir(
    model: torch.nn.Module, tokenizer: Any, out_dir: Path, dtype: torch.dtype
) -> None:
    """Write the final HF model directory (weights in `dtype`, tokenizer) atomically."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(dtype).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _atomic_replace_dir(tmp, out_dir)


def _atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place (rename is atomic; the old one goes first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _last_row(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return json.loads(lines[-1]) if lines else {}


def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop rows logged after `max_step` (written before a crash, about to be recomputed)."""
    import json

    if not path.exists():
        return
    keep = [
        ln
        for ln in path.read_text().splitlines()
        if ln.strip() and json.loads(ln).get("step", 0) <= max_step
    ]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint (directories appear only by atomic rename, so all are)."""
    found = (
        sorted(Path(checkpoint_dir).glob("step_*/trainer_state.pt"))
        if Path(checkpoint_dir).exists()
        else []
    )
    return found[-1].parent if found else None


class _Mean:
    """Weighted means over the micro-batches of one step (weights: token or row counts)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, name: str, value: Tensor | float, weight: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value) * weight
        self.weights[name] = self.weights.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / max(self.weights[k], 1e-12) for k in self.sums}


# ----------------------------------------------------------------------------- the trainer


def train(
    kind: str,
    cfg: TrainConfig,
    model_path: Path,
    data_path: Path,
    out_dir: Path,
    checkpoint_dir: Path,
    metrics_path: Path,
    progress: bool = False,
    *,
    stop_after: int | None = None,
    on_step: Callable[[int, Any, Any], None] | None = None,
) -> dict[str, Any]:
    """Train `kind` ∈ {sft, psft, dft, iwsft} with `cfg`; return a small summary dict.

    `on_step(step, model, tokenizer)`: called after every optimizer step (e.g. intermediate
    evaluation); it must leave the model's mode and the RNG state as it found them.

    `stop_after`: stop (as if preempted) once this many optimizer steps are done, after writing a
    checkpoint, without writing `out_dir`; a later call resumes. For tests and time-sliced jobs.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars; ours is the only one
    if kind not in CONFIGS:
        raise ValueError(f"unknown training kind {kind!r}; expected one of {sorted(CONFIGS)}")
    if not isinstance(cfg, CONFIGS[kind]):
        cfg = CONFIGS[kind].model_validate(cfg if isinstance(cfg, dict) else cfg.model_dump())
    model_path, out_dir, checkpoint_dir, metrics_path = map(
        Path, (model_path, out_dir, checkpoint_dir, metrics_path)
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = _amp_dtype(cfg.dtype, device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # ---- data
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    examples, data_stats = load_chat_dataset(data_path, tokenizer, cfg.max_length, cfg.truncation)
    lengths = [len(e) for e in examples]
    mini_size = cfg.mini_batch_size or cfg.train_batch_size
    n_batches_epoch = batches_per_epoch(len(examples), cfg.train_batch_size)
    if n_batches_epoch == 0:
        raise ValueError(
            f"{len(examples)} usable examples (of {data_stats.rows} rows) cannot fill one train batch "
            f"of {cfg.train_batch_size}"
        )
    steps_per_batch = cfg.train_batch_size // mini_size
    if cfg.max_steps:
        total_steps = cfg.max_steps
    else:
        total_steps = max(1, math.ceil(cfg.epochs * n_batches_epoch)) * steps_per_batch
    steps_per_epoch = n_batches_epoch * steps_per_batch

    # ---- models: the policy (from the latest checkpoint if any) and the frozen initial model
    ckpt = latest_checkpoint(checkpoint_dir)
    model = _load_model(ckpt / "model" if ckpt else model_path, device)
    save_dtype = _checkpoint_dtype(model_path)
    _freeze(model, cfg.freeze)
    model.train()
    psft = kind == "psft"
    needs_ref = (
        (kind == "sft" and cfg.kl is not None)
        or kind == "iwsft"
        or (psft and cfg.old_policy == "initial")
    )
    ref_model = None
    if needs_ref:
        ref_model = _load_model(model_path, device).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)

    # ---- resume state
    step = 0
    old_cache: dict[int, list[tuple[Tensor, Tensor | None]]] | None = None
    ratio_one_mini: int | None = None  # the mini-batch whose θ_old is θ itself (uses logp.detach())
    clipped: Counter[int] = Counter()
    if ckpt:
        state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False)
        if state["total_steps"] != total_steps or state["kind"] != kind:
            raise ValueError(
                f"checkpoint {ckpt} is from a different run (kind {state['kind']}, {state['total_steps']} "
                f"steps; now {kind}, {total_steps} steps); delete it to start over"
            )
        step = state["step"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        old_cache, ratio_one_mini = state["old_cache"], state["ratio_one_mini"]
        if old_cache is not None:  # loaded on the CPU (RNG states must stay there); move to device
            old_cache = {
                j: [(lp.to(device), None if e is None else e.to(device)) for lp, e in entries]
                for j, entries in old_cache.items()
            }
        clipped = Counter(state["clipped"])
        truncate_metrics(metrics_path, step)
        truncate_metrics(metrics_path.parent / CLIPPED_TOKENS_FILE, step)

    # ---- forward helpers
    def forward_logp(m: torch.nn.Module, micro: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """`[B, T-1]` log-probs of the labels (0 off the response) and the response logits `[n, V]`."""
        mask = micro["loss_mask"].to(device).bool()
        with autocast():
            logits = _response_logits(
                m, micro["input_ids"].to(device), micro["attention_mask"].to(device), mask
            )
        labels = micro["labels"].to(device)[mask]
        logp = L.token_logprobs(logits[None], labels[None])[0]
        return torch.zeros(mask.shape, dtype=logp.dtype, device=device).masked_scatter(
            mask, logp
        ), logits

    @torch.no_grad()
    def logp_pass(
        m: torch.nn.Module, micros: list[dict[str, Tensor]], entropy: bool
    ) -> list[tuple[Tensor, Tensor | None]]:
        """(log-probs, entropies or None) per micro-batch, without grad: θ_old and reference passes."""
        out = []
        for micro in micros:
            logp, logits = forward_logp(m, micro)
            ent = None
            if entropy:
                ent = torch.zeros_like(logp).masked_scatter(
                    micro["loss_mask"].to(device).bool(), L.token_entropy(logits)
                )
            out.append((logp, ent))
        return out

    def save_checkpoint() -> None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        final = checkpoint_dir / f"step_{step:08d}"
        tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        state = {
            "kind": kind,
            "step": step,
            "total_steps": total_steps,
            "data_position": {
                "train_batch": step // steps_per_batch,
                "mini_batch": step % steps_per_batch,
            },
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "python_rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "old_cache": old_cache,
            "ratio_one_mini": ratio_one_mini,
            "clipped": dict(clipped),
        }
        torch.save(state, tmp / "trainer_state.pt")
        _atomic_replace_dir(tmp, final)
        for older in checkpoint_dir.glob("step_*"):  # keep only the newest
            if older != final:
                shutil.rmtree(older, ignore_errors=True)

    # ---- the objective of one micro-batch: (logp, mask, old, ref, denom) -> (loss, metrics)
    def objective(at_step: int) -> tuple[str, Callable[..., tuple[Tensor, dict[str, Tensor]]]]:
        agg = cfg.loss_agg_mode
        if kind == "sft" and cfg.kl is not None:
            return "sft-kl", lambda lp, m, old, ref, d: L.sft_kl_loss(
                lp, ref, m, cfg.kl.coef, cfg.kl.estimator, agg, d
            )
        if kind == "sft" or (psft and at_step < cfg.warmup_sft_steps):
            return "sft", lambda lp, m, old, ref, d: (L.sft_loss(lp, m, agg, d), {})
        if psft:
            return "psft", lambda lp, m, old, ref, d: L.psft_loss(
                lp, old, m, cfg.clip_low, cfg.clip_high, agg, d
            )
        if kind == "dft":
            return "dft", lambda lp, m, old, ref, d: (L.dft_loss(lp, m, agg, d), {})
        return "iwsft", lambda lp, m, old, ref, d: L.iwsft_loss(
            lp, ref, m, cfg.level, cfg.weight_clip, agg, d
        )

    # ---- one optimizer step on mini-batch j (micro-batches accumulate into one gradient)
    def optimizer_step(
        j: int, micros: list[dict[str, Tensor]], name: str, loss_fn: Callable
    ) -> dict:
        masks = [mb.get("train_mask", mb["loss_mask"]).to(device) for mb in micros]
        denom = _mini_denom(masks, cfg.loss_agg_mode)  # the whole mini-batch's: exact accumulation
        stats, loss_total = _Mean(), 0.0
        optimizer.zero_grad(set_to_none=True)
        for i, micro in enumerate(micros):
            logp, logits = forward_logp(model, micro)
            labels = micro["labels"].to(device)
            old = ref = None
            if name == "psft":
                old = logp.detach() if j == ratio_one_mini else old_cache[j][i][0]
            if j in ref_cache:
                ref = ref_cache[j][i][0]
            loss, extra = loss_fn(logp, masks[i], old, ref, denom)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite {name} loss ({loss.item()}) at step {step + 1} (micro-batch {i}); "
                    f"the last good checkpoint is kept in {checkpoint_dir}"
                )
            loss.backward()
            loss_total += loss.item()
            # logged metrics are token means over the whole mini-batch: weight each micro-batch
            full, n_rows = micro["loss_mask"].to(device), float((masks[i].sum(-1) > 0).sum())
            with torch.no_grad():
                stats.add("ce", L.masked_mean(-logp, full), float(full.sum()))
                stats.add("entropy", L.token_entropy(logits).mean(), float(full.sum()))
            for k, v in extra.items():
                per_row = k == "iw_weight" and cfg.level == "sequence"
                stats.add(k, v, n_rows if per_row else float(masks[i].sum()))
            if name == "psft" and clipped_writer is not None:
                clipped.update(labels[L.psft_clipped(logp, old, masks[i], cfg.clip_high)].tolist())
            del logits, logp, loss  # free the graph's activations before the next micro-batch
        grad_norm = torch.nn.utils.clip_grad_norm_(
            params, cfg.grad_clip
        )  # returns the norm before clipping
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(
                f"non-finite gradient norm at step {step + 1}; the last good checkpoint is kept in {checkpoint_dir}"
            )
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        return {
            "loss": loss_total,
            **stats.result(),
            "grad_norm": float(grad_norm),
            "lr": lr,
            "tokens": sum(int(mb["attention_mask"].sum()) for mb in micros),
            "response_tokens": sum(int(mb["loss_mask"].sum()) for mb in micros),
            "trained_tokens": sum(int(m.sum()) for m in masks),
        }

    # ---- the loop over train batches
    clipped_writer = None
    if psft and cfg.clipped_tokens_every:
        clipped_writer = MetricsWriter(metrics_path.parent / CLIPPED_TOKENS_FILE)
    bar = _ProgressBar(total_steps, step) if progress and sys.stderr.isatty() else None
    # The final numbers: the last logged row (also after a resume that had no step left to do).
    last: dict[str, Any] = _last_row(metrics_path)
    run_tokens, run_start = 0, time.perf_counter()
    epoch_order: tuple[int, list[list[int]]] = (-1, [])
    ref_cache: dict[int, list[tuple[Tensor, Tensor | None]]] = {}
    try:
        with MetricsWriter(metrics_path) as writer:
            while step < total_steps:
                b, first_mini = divmod(step, steps_per_batch)  # first_mini > 0 only on resume
                epoch, b_in_epoch = divmod(b, n_batches_epoch)
                if epoch_order[0] != epoch:
                    epoch_order = (
                        epoch,
                        train_batches(lengths, cfg.train_batch_size, cfg.seed, epoch),
                    )
                batch = [examples[i] for i in epoch_order[1][b_in_epoch]]
                minis = [
                    [collate(mb, pad_id) for mb in mini]
                    for mini in split_batch(batch, mini_size, cfg.micro_batch_size)
                ]
                t_step = time.perf_counter()
                if first_mini == 0:  # a new train batch: θ_old will be refreshed
                    old_cache, ratio_one_mini = None, None
                elif old_cache and psft and cfg.entropy_top_frac is not None:
                    _apply_entropy_selection(
                        old_cache, minis, cfg.entropy_top_frac
                    )  # resumed mid-batch

                # (1) reference log-probs, once per train batch (PSFT's "initial" θ_old: step 2)
                ref_cache = {}
                if ref_model is not None and not psft:
                    ref_cache = {
                        j: logp_pass(ref_model, minis[j], False)
                        for j in range(first_mini, steps_per_batch)
                    }

                for j in range(first_mini, steps_per_batch):
                    name, loss_fn = objective(step)
                    # (2) θ_old log-probs, once per train batch, at its first PSFT step
                    if name == "psft" and old_cache is None:
                        ent = cfg.entropy_top_frac is not None
                        if cfg.old_policy == "initial":
                            old_cache = {
                                k: logp_pass(ref_model, minis[k], ent)
                                for k in range(j, steps_per_batch)
                            }
                        else:
                            # θ_old = θ right now, so mini-batch j has ratio 1 and needs no pass of
                            # its own (its old log-probs are logp.detach()), except for PSFT-Ent's entropies
                            ratio_one_mini = j
                            later = range(j if ent else j + 1, steps_per_batch)
                            old_cache = {k: logp_pass(model, minis[k], ent) for k in later}
                        if ent:
                            _apply_entropy_selection(old_cache, minis, cfg.entropy_top_frac)

                    # (3) one optimizer step per mini-batch
                    row = optimizer_step(j, minis[j], name, loss_fn)
                    step += 1

                    # ---- bookkeeping: metrics, clipped tokens, checkpoint, progress
                    now = time.perf_counter()
                    row["tokens_per_s"] = row["tokens"] / max(
                        now - t_step, 1e-9
                    )  # incl. θ_old/ref passes
                    t_step = now
                    run_tokens += row["tokens"]
                    if psft and name == "sft":
                        row["objective"] = "sft"  # PSFT warm-up
                    last = row
                    if step % cfg.log_every == 0 or step == total_steps:
                        writer.log(step, epoch=step / steps_per_epoch, **row)
                        write_progress(metrics_path.parent, step, total_steps)
                    if clipped_writer is not None and step % cfg.clipped_tokens_every == 0:
                        top = [
                            [tokenizer.decode([t]), c] for t, c in clipped.most_common(TOP_CLIPPED)
                        ]
                        clipped_writer.log(
                            step, **{CLIPPED_TOKENS_KEY: top}, clipped_total=sum(clipped.values())
                        )
                        clipped = Counter()
                    at_end = step in (total_steps, stop_after)
                    if at_end or (cfg.save_every and step % cfg.save_every == 0):
                        save_checkpoint()
                    if on_step is not None:
                        on_step(step, model, tokenizer)
                    if bar is not None:
                        bar.update(step, row)
                    if at_end:
                        break
                if step == stop_after:
                    break
    finally:
        if clipped_writer is not None:
            clipped_writer.close()
        if bar is not None:
            bar.stop()

    stopped = step < total_steps

    elapsed = time.perf_counter() - run_start
    if not stopped:
        save_model_dir(model, tokenizer, out_dir, save_dtype)
    return {
        "kind": kind,
        "steps": step,
        "total_steps": total_steps,
        "stopped": stopped,
        "final_loss": last.get("loss"),
        "final_ce": last.get("ce"),
        "final_entropy": last.get("entropy"),
        "tokens_per_s": run_tokens / elapsed if elapsed > 0 else None,
        "train_time_s": elapsed,
        "resumed_from": ckpt.name if ckpt else None,
        "data": data_stats.as_dict(),
    }


def _checkpoint_dtype(model_path: Path) -> torch.dtype:
    """The dtype the input model was stored in; the output is saved the same way (bf16 in, bf16 out)."""
    from transformers import AutoConfig

    dt = getattr(AutoConfig.from_pretrained(model_path), "dtype", None)
    if isinstance(dt, str):
        dt = getattr(torch, dt, None)
    return dt if isinstance(dt, torch.dtype) else torch.float32


# Architectures whose logits are exactly lm_head(final hidden state): for them the vocabulary
# projection is applied to response positions only (it and the fp32 log-softmax over [T, V] are
# a large share of a forward pass). Others (e.g. Gemma-2's logit soft-capping) take the full path.
_PLAIN_LM_HEAD = {"qwen2", "qwen3", "llama", "mistral"}


def _response_logits(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, mask: Tensor
) -> Tensor:
    """Logits at the response positions, `[n, V]` with n = mask.sum(); row k predicts the k-th
    response token (position t predicts token t+1: `mask` is over the shifted labels `[B, T-1]`)."""
    if getattr(model.config, "model_type", None) in _PLAIN_LM_HEAD:
        hidden = model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return model.get_output_embeddings()(hidden[:, :-1][mask])
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][mask]


def _mini_denom(masks: list[Tensor], mode: str) -> Tensor:
    """`losses.agg_denom` of the whole mini-batch, from its micro-batch masks (padded differently)."""
    n_tok = sum(m.sum() for m in masks).float()
    n_seq = sum((m.sum(-1) > 0).sum() for m in masks).float()
    if mode == "token-mean":
        d = n_tok
    elif mode == "seq-mean-token-sum-norm":
        d = n_seq * max(m.shape[-1] for m in masks)
    else:
        d = n_seq
    return d.clamp(min=1.0)


def _apply_entropy_selection(
    old_cache: dict[int, list[tuple[Tensor, Tensor | None]]],
    minis: list[list[dict[str, Tensor]]],
    frac: float,
) -> None:
    """PSFT-Ent: mark `train_mask` = top `frac` of the cached mini-batches' response tokens by
    θ_old's entropy, ranked jointly over all of them (a train-batch-wide threshold)."""
    ents, masks = [], []
    for j, entries in old_cache.items():
        for i, (_, ent) in enumerate(entries):
            m = minis[j][i]["loss_mask"].to(ent.device).bool()
            ents.append(ent[m])
            masks.append((j, i, m))
    pool = torch.cat(ents)
    k = max(1, math.ceil(frac * pool.numel()))
    threshold = pool.float().topk(k).values.min()
    for (j, i, m), (_, ent) in zip(
        masks, [e for es in old_cache.values() for e in es], strict=True
    ):
        minis[j][i]["train_mask"] = (m & (ent >= threshold)).long().cpu()


class _ProgressBar:
    def __init__(self, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  entropy {task.fields[entropy]:.3f}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._p.add_task(
            "train", total=total, completed=done, loss=float("nan"), entropy=float("nan")
        )
        self._p.start()

    def update(self, step: int, last: dict[str, float]) -> None:
        self._p.update(
            self._task,
            completed=step,
            loss=last.get("loss", float("nan")),
            entropy=last.get("entropy", float("nan")),
        )

    def stop(self) -> None:
        self._p.stop()
