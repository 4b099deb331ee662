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
`clipped_tokens.jsonl` next to `metrics_path`; resumable checkpoints in the shared format
(`training.checkpoint`; this trainer's extras: data position, θ_old cache, clipped-token counts).
A restarted run resumes from the newest good one and gives the same weights as an uninterrupted
run. Setup, the step body and checkpoints are the shared skeleton (`training.recipe`).

Log-probs and entropies are always computed in fp32.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from psft_orchestrator.configs.training import (
    DFTConfig,
    IWSFTConfig,
    PSFTConfig,
    SFTConfig,
    TrainConfig,
)
from psft_orchestrator.contract import CLIPPED_TOKENS_FILE, CLIPPED_TOKENS_KEY, MetricsWriter
from psft_orchestrator.training import losses as L
from psft_orchestrator.training.data import (
    batches_per_epoch,
    collate,
    load_chat_dataset,
    split_batch,
    train_batches,
)
from psft_orchestrator.training.recipe import Mean, Runtime, Trainer, load_tokenizer

CONFIGS: dict[str, type[TrainConfig]] = {
    "sft": SFTConfig,
    "psft": PSFTConfig,
    "dft": DFTConfig,
    "iwsft": IWSFTConfig,
}
TOP_CLIPPED = 50

# (log-probs, entropies or None) of each micro-batch of a mini-batch, from a no-grad pass
Pass = list[tuple[Tensor, Tensor | None]]
LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars; ours is the only one
    if kind not in CONFIGS:
        raise ValueError(f"unknown training kind {kind!r}; expected one of {sorted(CONFIGS)}")
    if not isinstance(cfg, CONFIGS[kind]):
        cfg = CONFIGS[kind].model_validate(cfg if isinstance(cfg, dict) else cfg.model_dump())
    recipe = SFTRecipe(kind, cfg, Path(model_path), Path(data_path), Path(checkpoint_dir),
                       Path(metrics_path))  # fmt: skip
    return recipe.train(Path(out_dir), progress, stop_after, on_step)


class SFTRecipe:
    """One run of an SFT-family objective; `train()` is the loop over train batches."""

    def __init__(
        self,
        kind: str,
        cfg: TrainConfig,
        model_path: Path,
        data_path: Path,
        checkpoint_dir: Path,
        metrics_path: Path,
    ) -> None:
        # ---- runtime and data
        self.kind, self.cfg, self.psft = kind, cfg, kind == "psft"
        self.rt = Runtime.from_config(cfg)
        self.tokenizer, self.pad_id = load_tokenizer(model_path)
        self.examples, self.data_stats = load_chat_dataset(
            data_path, self.tokenizer, cfg.max_length, cfg.truncation
        )
        self.lengths = [len(e) for e in self.examples]
        self.mini_size = cfg.mini_batch_size or cfg.train_batch_size
        self.n_batches_epoch = batches_per_epoch(len(self.examples), cfg.train_batch_size)
        if self.n_batches_epoch == 0:
            raise ValueError(
                f"{len(self.examples)} usable examples (of {self.data_stats.rows} rows) cannot "
                f"fill one train batch of {cfg.train_batch_size}"
            )
        self.steps_per_batch = cfg.train_batch_size // self.mini_size
        self.steps_per_epoch = self.n_batches_epoch * self.steps_per_batch
        epochs_steps = max(1, math.ceil(cfg.epochs * self.n_batches_epoch)) * self.steps_per_batch
        total_steps = cfg.max_steps or epochs_steps

        # ---- models, optimizer, schedule, resume (the shared skeleton)
        self.clipped_path = metrics_path.parent / CLIPPED_TOKENS_FILE
        self.run = Trainer(
            kind, cfg, self.rt, model_path, self.tokenizer, checkpoint_dir,
            [metrics_path, self.clipped_path], total_steps, reference=self.needs_reference(),
        )  # fmt: skip
        extra = self.run.resumed.extra if self.run.resumed else {}
        self.old_cache: dict[int, Pass] | None = self.to_device(extra.get("old_cache"))
        self.ratio_one_mini: int | None = extra.get("ratio_one_mini")  # θ_old is θ itself there
        self.clipped: Counter[int] = Counter(extra.get("clipped", {}))
        self.ref_cache: dict[int, Pass] = {}
        self.epoch_order: tuple[int, list[list[int]]] = (-1, [])  # (epoch, its train batches)

    def needs_reference(self) -> bool:
        cfg, kind = self.cfg, self.kind
        return (
            (kind == "sft" and cfg.kl is not None)
            or kind == "iwsft"
            or (self.psft and cfg.old_policy == "initial")
        )

    def to_device(self, cache: dict[int, Pass] | None) -> dict[int, Pass] | None:
        """A θ_old cache loaded on the CPU (RNG states must stay there), moved to the device."""
        if cache is None:
            return None
        dev = self.rt.device
        return {
            j: [(lp.to(dev), None if e is None else e.to(dev)) for lp, e in entries]
            for j, entries in cache.items()
        }

    # ----------------------------------------------------------------------------- the loop

    def train(
        self,
        out_dir: Path,
        progress: bool,
        stop_after: int | None,
        on_step: Callable[[int, Any, Any], None] | None,
    ) -> dict[str, Any]:
        run, cfg = self.run, self.cfg
        self.clipped_writer = None
        if self.psft and cfg.clipped_tokens_every:
            self.clipped_writer = MetricsWriter(self.clipped_path)
        bar = ProgressBar(run.total_steps, run.step) if progress and sys.stderr.isatty() else None
        # The final numbers: the last logged row (also after a resume that had no step left to do).
        self.last: dict[str, Any] = last_row(run.metric_files[0])
        self.run_tokens, run_start = 0, time.perf_counter()
        try:
            with run.metrics_writer() as writer:
                while run.step < run.total_steps and run.step != stop_after:
                    first_mini, minis = self.next_train_batch()
                    t_step = time.perf_counter()
                    for j in range(first_mini, self.steps_per_batch):
                        name, loss_fn = objective(self.kind, cfg, run.step)
                        self.refresh_old_policy(name, j, minis)
                        row = self.mini_batch_step(j, minis[j], name, loss_fn)
                        run.step += 1
                        t_step = self.record(writer, row, name, t_step)
                        at_end = run.step in (run.total_steps, stop_after)
                        run.maybe_save(at_end, **self.extra_state())
                        if on_step is not None:
                            on_step(run.step, run.model, self.tokenizer)
                        if bar is not None:
                            bar.update(run.step, row)
                        if at_end:
                            break
        finally:
            if self.clipped_writer is not None:
                self.clipped_writer.close()
            if bar is not None:
                bar.stop()
        return self.finish(out_dir, time.perf_counter() - run_start)

    def next_train_batch(self) -> tuple[int, list[list[dict[str, Tensor]]]]:
        """The current train batch as mini-batches of collated micro-batches, the first mini-batch
        still to do (> 0 only on resume), and its reference log-probs in `self.ref_cache`."""
        cfg = self.cfg
        b, first_mini = divmod(self.run.step, self.steps_per_batch)
        epoch, b_in_epoch = divmod(b, self.n_batches_epoch)
        if self.epoch_order[0] != epoch:
            order = train_batches(self.lengths, cfg.train_batch_size, cfg.seed, epoch)
            self.epoch_order = (epoch, order)
        batch = [self.examples[i] for i in self.epoch_order[1][b_in_epoch]]
        minis = [
            [collate(mb, self.pad_id) for mb in mini]
            for mini in split_batch(batch, self.mini_size, cfg.micro_batch_size)
        ]
        if first_mini == 0:  # a new train batch: θ_old will be refreshed
            self.old_cache, self.ratio_one_mini = None, None
        elif self.old_cache and self.psft and cfg.entropy_top_frac is not None:
            select_top_entropy(self.old_cache, minis, cfg.entropy_top_frac)  # resumed mid-batch
        # (1) reference log-probs, once per train batch (PSFT's "initial" θ_old: step 2)
        ref = self.run.ref_model
        self.ref_cache = {}
        if ref is not None and not self.psft:
            todo = range(first_mini, self.steps_per_batch)
            self.ref_cache = {j: self.logp_pass(ref, minis[j], False) for j in todo}
        return first_mini, minis

    def refresh_old_policy(self, name: str, j: int, minis: list[list[dict[str, Tensor]]]) -> None:
        """(2) θ_old log-probs, once per train batch, at its first PSFT step."""
        cfg = self.cfg
        if name != "psft" or self.old_cache is not None:
            return
        ent = cfg.entropy_top_frac is not None
        if cfg.old_policy == "initial":
            todo = range(j, self.steps_per_batch)
            self.old_cache = {k: self.logp_pass(self.run.ref_model, minis[k], ent) for k in todo}
        else:
            # θ_old = θ right now, so mini-batch j has ratio 1 and needs no pass of its own (its
            # old log-probs are logp.detach()), except for PSFT-Ent's entropies
            self.ratio_one_mini = j
            later = range(j if ent else j + 1, self.steps_per_batch)
            self.old_cache = {k: self.logp_pass(self.run.model, minis[k], ent) for k in later}
        if ent:
            select_top_entropy(self.old_cache, minis, cfg.entropy_top_frac)

    def mini_batch_step(
        self, j: int, micros: list[dict[str, Tensor]], name: str, loss_fn: LossFn
    ) -> dict[str, Any]:
        """(3) One optimizer step on mini-batch j; its micro-batches accumulate one gradient."""
        cfg, dev = self.cfg, self.rt.device
        masks = [mb.get("train_mask", mb["loss_mask"]).to(dev) for mb in micros]
        denom = L.agg_denom(masks, cfg.loss_agg_mode)  # the whole mini-batch's: exact accumulation
        stats = Mean()

        def loss_of(i: int, micro: dict[str, Tensor]) -> Tensor:
            logp, logits = self.forward_logp(self.run.model, micro)
            old = ref = None
            if name == "psft":
                old = logp.detach() if j == self.ratio_one_mini else self.old_cache[j][i][0]
            if j in self.ref_cache:
                ref = self.ref_cache[j][i][0]
            loss, extra = loss_fn(logp, masks[i], old, ref, denom)
            self.add_stats(stats, micro, masks[i], logp, logits, extra)
            if name == "psft" and self.clipped_writer is not None:
                hits = L.psft_clipped(logp, old, masks[i], cfg.clip_high)
                self.clipped.update(micro["labels"].to(dev)[hits].tolist())
            return loss

        loss, grad_norm, lr = self.run.optimizer_step(micros, loss_of, f"{name} loss")
        return {
            "loss": loss,
            **stats.result(),
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": sum(int(mb["attention_mask"].sum()) for mb in micros),
            "response_tokens": sum(int(mb["loss_mask"].sum()) for mb in micros),
            "trained_tokens": sum(int(m.sum()) for m in masks),
        }

    def add_stats(self, stats: Mean, micro, mask, logp, logits, extra) -> None:
        """Logged metrics are token means over the whole mini-batch: weight each micro-batch."""
        full = micro["loss_mask"].to(self.rt.device)
        n_rows = float((mask.sum(-1) > 0).sum())
        with torch.no_grad():
            stats.add("ce", L.masked_mean(-logp, full), float(full.sum()))
            stats.add("entropy", L.token_entropy(logits).mean(), float(full.sum()))
        for k, v in extra.items():
            per_row = k == "iw_weight" and self.cfg.level == "sequence"
            stats.add(k, v, n_rows if per_row else float(mask.sum()))

    def record(self, writer: MetricsWriter, row: dict[str, Any], name: str, t_step: float) -> float:
        """Metrics row, progress and clipped tokens of the step just done; returns the new clock."""
        run, cfg = self.run, self.cfg
        now = time.perf_counter()
        row["tokens_per_s"] = row["tokens"] / max(now - t_step, 1e-9)  # incl. θ_old/ref passes
        self.run_tokens += row["tokens"]
        if self.psft and name == "sft":
            row["objective"] = "sft"  # PSFT warm-up
        self.last = row
        run.log(writer, row, epoch=run.step / self.steps_per_epoch)
        if self.clipped_writer is not None and run.step % cfg.clipped_tokens_every == 0:
            top = [
                [self.tokenizer.decode([t]), c] for t, c in self.clipped.most_common(TOP_CLIPPED)
            ]
            total = sum(self.clipped.values())
            self.clipped_writer.log(run.step, **{CLIPPED_TOKENS_KEY: top}, clipped_total=total)
            self.clipped = Counter()
        return now

    def extra_state(self) -> dict[str, Any]:
        """This trainer's part of a checkpoint: data position, θ_old cache, clipped counts."""
        step, per = self.run.step, self.steps_per_batch
        return {
            "data_position": {"train_batch": step // per, "mini_batch": step % per},
            "old_cache": self.old_cache,
            "ratio_one_mini": self.ratio_one_mini,
            "clipped": dict(self.clipped),
        }

    def finish(self, out_dir: Path, elapsed: float) -> dict[str, Any]:
        run = self.run
        stopped = run.step < run.total_steps
        if not stopped:
            run.finish(out_dir)
        return {
            "kind": self.kind,
            "steps": run.step,
            "total_steps": run.total_steps,
            "stopped": stopped,
            "final_loss": self.last.get("loss"),
            "final_ce": self.last.get("ce"),
            "final_entropy": self.last.get("entropy"),
            "tokens_per_s": self.run_tokens / elapsed if elapsed > 0 else None,
            "train_time_s": elapsed,
            "resumed_from": run.resumed.path.name if run.resumed else None,
            "data": self.data_stats.as_dict(),
        }

    # ----------------------------------------------------------------------------- forward passes

    def forward_logp(self, m: torch.nn.Module, micro: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """`[B, T-1]` log-probs of the labels (0 off the response) and the response logits `[n, V]`."""
        dev = self.rt.device
        mask = micro["loss_mask"].to(dev).bool()
        with self.rt.autocast():
            logits = response_logits(
                m, micro["input_ids"].to(dev), micro["attention_mask"].to(dev), mask
            )
        labels = micro["labels"].to(dev)[mask]
        logp = L.token_logprobs(logits[None], labels[None])[0]
        full = torch.zeros(mask.shape, dtype=logp.dtype, device=dev).masked_scatter(mask, logp)
        return full, logits

    @torch.no_grad()
    def logp_pass(self, m: torch.nn.Module, micros: list[dict[str, Tensor]], entropy: bool) -> Pass:
        """(log-probs, entropies or None) per micro-batch, without grad: θ_old and reference passes."""
        out = []
        for micro in micros:
            logp, logits = self.forward_logp(m, micro)
            ent = None
            if entropy:
                mask = micro["loss_mask"].to(self.rt.device).bool()
                ent = torch.zeros_like(logp).masked_scatter(mask, L.token_entropy(logits))
            out.append((logp, ent))
        return out


def objective(kind: str, cfg: Any, at_step: int) -> tuple[str, LossFn]:
    """The objective of optimizer step `at_step`: (name, (logp, mask, old, ref, denom) → (loss,
    metrics)). PSFT is plain SFT during its warm-up."""
    agg = cfg.loss_agg_mode
    if kind == "sft" and cfg.kl is not None:
        return "sft-kl", lambda lp, m, old, ref, d: L.sft_kl_loss(
            lp, ref, m, cfg.kl.coef, cfg.kl.estimator, agg, d
        )
    if kind == "sft" or (kind == "psft" and at_step < cfg.warmup_sft_steps):
        return "sft", lambda lp, m, old, ref, d: (L.sft_loss(lp, m, agg, d), {})
    if kind == "psft":
        return "psft", lambda lp, m, old, ref, d: L.psft_loss(
            lp, old, m, cfg.clip_low, cfg.clip_high, agg, d
        )
    if kind == "dft":
        return "dft", lambda lp, m, old, ref, d: (L.dft_loss(lp, m, agg, d), {})
    return "iwsft", lambda lp, m, old, ref, d: L.iwsft_loss(
        lp, ref, m, cfg.level, cfg.weight_clip, agg, d
    )


def last_row(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return json.loads(lines[-1]) if lines else {}


# Architectures whose logits are exactly lm_head(final hidden state): for them the vocabulary
# projection is applied to response positions only (it and the fp32 log-softmax over [T, V] are
# a large share of a forward pass). Others (e.g. Gemma-2's logit soft-capping) take the full path.
PLAIN_LM_HEAD = {"qwen2", "qwen3", "llama", "mistral"}


def response_logits(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, mask: Tensor
) -> Tensor:
    """Logits at the response positions, `[n, V]` with n = mask.sum(); row k predicts the k-th
    response token (position t predicts token t+1: `mask` is over the shifted labels `[B, T-1]`)."""
    if getattr(model.config, "model_type", None) in PLAIN_LM_HEAD:
        hidden = model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return model.get_output_embeddings()(hidden[:, :-1][mask])
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][mask]


def select_top_entropy(
    old_cache: dict[int, Pass], minis: list[list[dict[str, Tensor]]], frac: float
) -> None:
    """PSFT-Ent: set `train_mask` = top `frac` of the cached mini-batches' response tokens by
    θ_old's entropy, ranked jointly over all of them (a train-batch-wide threshold): the
    micro-batches are padded to one width and stacked for `losses.top_entropy_mask`."""
    keys = [(j, i) for j, entries in old_cache.items() for i in range(len(entries))]
    ents = [old_cache[j][i][1] for j, i in keys]
    masks = [minis[j][i]["loss_mask"].to(e.device) for (j, i), e in zip(keys, ents, strict=True)]
    width = max(e.shape[-1] for e in ents)
    keep = L.top_entropy_mask(
        torch.cat([F.pad(e, (0, width - e.shape[-1])) for e in ents]),
        torch.cat([F.pad(m, (0, width - m.shape[-1])) for m in masks]),
        frac,
    )
    rows = keep.split([e.shape[0] for e in ents])
    for (j, i), m, r in zip(keys, masks, rows, strict=True):
        minis[j][i]["train_mask"] = r[:, : m.shape[-1]].long().cpu()


class ProgressBar:
    """A rich progress bar with the last loss and entropy (interactive runs only)."""

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
