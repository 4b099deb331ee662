"""The artifact store: one directory per node, built aside and moved into place atomically.

<workspace>/artifacts/<stage>/<fp16>/      finished nodes (with _SUCCESS, written last)
<workspace>/artifacts/.tmp/<stage>-<fp16>-<pid>/   a node being built
<workspace>/artifacts/.failed/<stage>-<fp16>-<time>/  a failed attempt, kept for its log
<workspace>/checkpoints/<stage>/<fp16>/    resumable state; survives a crash, removed on success
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def tmp_dir(workspace: Path, stage: str, fp16: str) -> Path:
    """A fresh build directory for one attempt of a node.

    When the node will resume from a checkpoint, the metrics of its previous attempt are
    carried over (the trainer truncates them to the checkpoint's step), so a crash loses no
    logged step.
    """
    d = workspace / "artifacts" / ".tmp" / f"{stage}-{fp16}-{os.getpid()}"
    if d.exists():
        shutil.rmtree(d)
    (d / "logs").mkdir(parents=True)
    (d / "outputs").mkdir()
    ckpt = checkpoint_dir(workspace, stage, fp16)
    previous = sorted((workspace / "artifacts" / ".failed").glob(f"{stage}-{fp16}-*"))
    if previous and ckpt.is_dir() and any(ckpt.iterdir()):
        for name in CARRIED_OVER:
            if (previous[-1] / name).exists():
                shutil.copyfile(previous[-1] / name, d / name)
    return d


# Files of an interrupted attempt that a resumed attempt continues.
CARRIED_OVER = ("metrics.jsonl", "clipped_tokens.jsonl")


def checkpoint_dir(workspace: Path, stage: str, fp16: str) -> Path:
    return workspace / "checkpoints" / stage / fp16


def finalize(tmp: Path, final: Path, manifest: dict[str, Any]) -> bool:
    """Write the manifest and _SUCCESS into `tmp`, then rename it to `final`.

    Returns False when another run finished the same node first (ours is discarded: both are
    the same fingerprint, so the existing one is as good and is never overwritten).
    """
    write_json_atomic(tmp / "manifest.json", manifest)
    (tmp / "_SUCCESS").write_text(now_iso() + "\n")
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)  # atomic on one filesystem; fails if final exists and is not empty
    except OSError:
        if (final / "_SUCCESS").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        shutil.rmtree(final, ignore_errors=True)  # a half-moved leftover without _SUCCESS
        os.rename(tmp, final)
    return True


def keep_failed(workspace: Path, tmp: Path, stage: str, fp16: str) -> Path:
    base = workspace / "artifacts" / ".failed" / f"{stage}-{fp16}-{time.strftime('%Y%m%dT%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    dest, n = base, 1
    while dest.exists():  # a retried attempt that failed within the same second
        n += 1
        dest = base.with_name(f"{base.name}.{n}")
    os.rename(tmp, dest)
    return dest


def retire(final: Path) -> None:
    """Move a finished node aside (for --force) instead of deleting it: nothing is ever lost."""
    if final.exists():
        dest = final.parent / ".forced" / f"{final.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, dest)


def clean_stale_tmp(workspace: Path) -> list[Path]:
    """Build directories of runs that no longer exist (killed with -9, say) become failed
    attempts: kept under .failed/ with their logs and metrics, never deleted."""
    moved = []
    root = workspace / "artifacts" / ".tmp"
    for d in sorted(root.glob("*-*-*")) if root.exists() else []:
        pid = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and pid.isdigit() and not _alive(int(pid)):
            stage_fp = d.name.rsplit("-", 1)[0]
            dest = (
                workspace
                / "artifacts"
                / ".failed"
                / f"{stage_fp}-{time.strftime('%Y%m%dT%H%M%S')}-killed"
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(d, dest)
            moved.append(dest)
    return moved


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host() -> str:
    return socket.gethostname()
