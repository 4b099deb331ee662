"""The one checkpoint format of every trainer (SFT family, DPO, GRPO, pretrain).

    <checkpoint_dir>/step_XXXXXXXX/model/             HF weights + tokenizer
    <checkpoint_dir>/step_XXXXXXXX/trainer_state.pt   kind, step, total_steps, optimizer,
                                                      scheduler, RNG states, trainer extras
    <checkpoint_dir>/step_XXXXXXXX/metrics/           the metric files as they were at `step`
    <checkpoint_dir>/step_XXXXXXXX/COMPLETE.json      marker, written last: size + CRC32 per file

A checkpoint counts only when it is complete: it is written under a temporary name, the marker
is written last, and the directory is renamed into place. At resume the marker is checked
against the files; a truncated or corrupted checkpoint is skipped (with a warning in the log) and
the previous one is used, which is why the two newest are kept.

The metric files travel with the checkpoint ("metrics follow the checkpoint, not the attempt"):
a resumed run, in whatever directory, starts from the checkpoint's copy, so every step is logged
exactly once even when the crash came after the last step. `restore_metrics` gives the run layer
the same thing without a trainer.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.pt"
MARKER = "COMPLETE.json"
METRICS_DIR = "metrics"
KEEP = 2  # the newest and one fallback

log = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint directory whose files do not match its marker (or that has none)."""


# ----------------------------------------------------------------------------- writing


def save(
    checkpoint_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    metric_files: list[Path] = (),
) -> Path:
    """Write `step_XXXXXXXX` atomically (temp dir, marker last, rename); prune older ones.

    `state` is the trainer's state (`trainer_state` builds the common part); `metric_files` are
    copied as they are now, so they must already hold the rows up to `step`.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / step_name(step)
    tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "model")
    torch.save(state, tmp / STATE_FILE)
    for path in map(Path, metric_files):
        if path.exists():
            (tmp / METRICS_DIR).mkdir(exist_ok=True)
            shutil.copyfile(path, tmp / METRICS_DIR / path.name)
    write_marker(tmp, step)
    replace_dir(tmp, final)
    _prune(checkpoint_dir, step)
    return final


def trainer_state(
    kind: str, step: int, total_steps: int, optimizer: Any, scheduler: Any, **extra: Any
) -> dict[str, Any]:
    """The state every trainer saves: what run it is, where it is, optimizer, schedule, RNG."""
    return {
        "kind": kind,
        "step": step,
        "total_steps": total_steps,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "extra": extra,
    }


def write_marker(directory: Path, step: int) -> None:
    """Seal a fully written checkpoint directory: size and CRC32 of every file, fsynced."""
    files = {}
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if path.name != MARKER:
            files[path.relative_to(directory).as_posix()] = _fingerprint(path, sync=True)
    marker = Path(directory) / MARKER
    with marker.open("w") as f:
        json.dump({"step": step, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place (rename is atomic; an old one goes first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def _prune(checkpoint_dir: Path, current: int) -> None:
    """Keep the `KEEP` newest checkpoints up to `current`; later ones are stale (a rerun redid
    those steps from an earlier checkpoint), temp dirs are leftovers of a killed save."""
    for leftover in checkpoint_dir.glob(".tmp-step_*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)
    steps = sorted(_all_steps(checkpoint_dir), reverse=True)
    kept = [s for s in steps if s <= current][:KEEP]
    for s in steps:
        if s not in kept:
            shutil.rmtree(checkpoint_dir / step_name(s), ignore_errors=True)


def _fingerprint(path: Path, sync: bool = False) -> list[int]:
    crc, size = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        if sync:
            os.fsync(f.fileno())
    return [size, crc]


# ----------------------------------------------------------------------------- reading


@dataclass
class Checkpoint:
    """A verified checkpoint directory and its trainer state (loaded on the CPU)."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def extra(self) -> dict[str, Any]:
        return self.state.get("extra", {})

    def restore(self, optimizer: Any, scheduler: Any) -> None:
        """Load optimizer and scheduler state and set every RNG as it was at the save."""
        optimizer.load_state_dict(self.state["optimizer"])
        scheduler.load_state_dict(self.state["scheduler"])
        random.setstate(self.state["python_rng"])
        torch.set_rng_state(self.state["torch_rng"])
        if torch.cuda.is_available() and self.state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(self.state["cuda_rng"])

    def restore_metrics(self, metric_files: list[Path]) -> None:
        """Put each metric file back as it was at this checkpoint (rows after it are dropped)."""
        for path in map(Path, metric_files):
            saved = self.path / METRICS_DIR / path.name
            if saved.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                shutil.copyfile(saved, tmp)
                os.replace(tmp, path)
            else:
                truncate_metrics(path, self.step)


def verify(path: Path) -> None:
    """Raise CorruptCheckpointError unless every file of `path` matches its marker."""
    marker = Path(path) / MARKER
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        raise CorruptCheckpointError(f"{path.name}: no valid {MARKER} ({e})") from None
    for rel, expected in files.items():
        f = Path(path) / rel
        if not f.is_file():
            raise CorruptCheckpointError(f"{path.name}: {rel} is missing")
        if _fingerprint(f) != expected:
            raise CorruptCheckpointError(f"{path.name}: {rel} is truncated or corrupted")


def latest(
    checkpoint_dir: Path | None, kind: str | None = None, total_steps: int | None = None
) -> Checkpoint | None:
    """The newest checkpoint that verifies, or None. Broken ones are skipped with a warning;
    one from a different run (`kind`, `total_steps`) is a ValueError."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    for s in sorted(_all_steps(Path(checkpoint_dir)), reverse=True):
        path = Path(checkpoint_dir) / step_name(s)
        try:
            verify(path)
            state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        except (CorruptCheckpointError, OSError, RuntimeError, EOFError) as e:
            log.warning("skipping checkpoint %s: %s; falling back to the previous one", path, e)
            continue
        if (kind, total_steps) != (None, None) and (
            state["kind"] != kind or state["total_steps"] != total_steps
        ):
            raise ValueError(
                f"checkpoint {path} is from a different run (kind {state['kind']}, "
                f"{state['total_steps']} steps; now {kind}, {total_steps} steps); "
                "delete it to start over"
            )
        return Checkpoint(path, state)
    return None


def restore_metrics(checkpoint_dir: Path, node_dir: Path, names: tuple[str, ...] = ()) -> int:
    """For the run layer: write the metric files of the newest good checkpoint into `node_dir`
    (all of them, or only `names`); return its step, 0 when there is no checkpoint."""
    ckpt = latest(checkpoint_dir)
    if ckpt is None:
        return 0
    saved = ckpt.path / METRICS_DIR
    stored = sorted(p.name for p in saved.iterdir()) if saved.is_dir() else []
    ckpt.restore_metrics([Path(node_dir) / n for n in (names or stored)])
    return ckpt.step


def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop rows logged after `max_step` (written before a crash, about to be recomputed)."""
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


def _all_steps(checkpoint_dir: Path) -> list[int]:
    return [
        int(p.name[len("step_") :])
        for p in checkpoint_dir.glob("step_*")
        if p.is_dir() and p.name[len("step_") :].isdigit()
    ]
