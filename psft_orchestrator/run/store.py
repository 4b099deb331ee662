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

from .faults import kill_point


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def build_dir(workspace: Path, stage: str, fp16: str) -> Path:
    """Where this process builds a node (see `tmp_dir`); the live view reads progress there."""
    return workspace / "artifacts" / ".tmp" / f"{stage}-{fp16}-{os.getpid()}"


def tmp_dir(workspace: Path, stage: str, fp16: str) -> Path:
    """A fresh build directory for one attempt of a node.

    When the node will resume from a checkpoint, the metrics of the interrupted attempt that got
    furthest are carried over (the trainer truncates them to the checkpoint's step), so a crash
    loses no logged step.
    """
    d = build_dir(workspace, stage, fp16)
    if d.exists():
        shutil.rmtree(d)
    (d / "logs").mkdir(parents=True)
    (d / "outputs").mkdir()
    ckpt = checkpoint_dir(workspace, stage, fp16)
    if ckpt.is_dir() and any(ckpt.iterdir()):
        source = furthest_attempt(workspace, stage, fp16)
        for name in CARRIED_OVER if source else ():
            if (source / name).exists():
                shutil.copyfile(source / name, d / name)
    return d


# Files of an interrupted attempt that a resumed attempt continues.
CARRIED_OVER = ("metrics.jsonl", "clipped_tokens.jsonl")


def furthest_attempt(workspace: Path, stage: str, fp16: str) -> Path | None:
    """The interrupted attempt of a node whose metrics reach the highest step (the newest of
    equals). Not simply the newest attempt: one killed at start-up, or resumed with no step
    left, logs nothing new, and an older attempt holds the lines."""
    attempts = [
        d for d in (workspace / "artifacts" / ".failed").glob(f"{stage}-{fp16}-*") if d.is_dir()
    ]
    if not attempts:
        return None
    return max(attempts, key=lambda d: (last_step(d / "metrics.jsonl"), d.stat().st_mtime_ns))


def last_step(metrics: Path) -> int:
    """The highest `step` in a metrics.jsonl (-1 if none); a line cut by a crash is skipped."""
    best = -1
    try:
        lines = metrics.read_text(errors="replace").splitlines()
    except OSError:
        return best
    for line in lines:
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            best = max(best, step)
    return best


def checkpoint_dir(workspace: Path, stage: str, fp16: str) -> Path:
    return workspace / "checkpoints" / stage / fp16


def finalize(tmp: Path, final: Path, manifest: dict[str, Any]) -> bool:
    """Write the manifest and _SUCCESS into `tmp`, then rename it to `final`.

    Returns False when another run finished the same node first (ours is discarded: both are
    the same fingerprint, so the existing one is as good and is never overwritten).
    """
    write_json_atomic(tmp / "manifest.json", manifest)
    (tmp / "_SUCCESS").write_text(now_iso() + "\n")
    kill_point("finalize", str(manifest.get("node_id", "")))
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
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = unused(workspace / "artifacts" / ".failed" / f"{stage}-{fp16}-{stamp}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)
    return dest


def unused(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... if taken (two failures within one second)."""
    n, found = 1, path
    while found.exists():
        n += 1
        found = path.with_name(f"{path.name}-{n}")
    return found


def retire(final: Path) -> None:
    """Move a finished node aside (for --force) instead of deleting it: nothing is ever lost."""
    if final.exists():
        dest = final.parent / ".forced" / f"{final.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, dest)


def clean_stale_tmp(workspace: Path) -> list[Path]:
    """Build directories of earlier runs (killed with -9, say) become failed attempts: kept
    under .failed/ with their logs and metrics, never deleted.

    Call it holding the workspace lock: then no other run of this workspace is alive, so every
    build directory but our own is stale, whatever its pid says (a killed run's pid can still
    look alive: a zombie not yet reaped, or the number reused by another process).
    """
    moved = []
    root = workspace / "artifacts" / ".tmp"
    for d in sorted(root.glob("*-*-*")) if root.exists() else []:
        stage_fp, _, pid = d.name.rpartition("-")
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid():
            stamp = time.strftime("%Y%m%dT%H%M%S")
            dest = unused(workspace / "artifacts" / ".failed" / f"{stage_fp}-{stamp}-{pid}-killed")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(d, dest)
            moved.append(dest)
    return moved


def host() -> str:
    return socket.gethostname()
