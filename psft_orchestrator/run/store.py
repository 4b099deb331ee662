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
    d = workspace / "artifacts" / ".tmp" / f"{stage}-{fp16}-{os.getpid()}"
    if d.exists():
        shutil.rmtree(d)
    (d / "logs").mkdir(parents=True)
    (d / "outputs").mkdir()
    return d


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
    dest = workspace / "artifacts" / ".failed" / f"{stage}-{fp16}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)
    return dest


def retire(final: Path) -> None:
    """Move a finished node aside (for --force) instead of deleting it: nothing is ever lost."""
    if final.exists():
        dest = final.parent / ".forced" / f"{final.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, dest)


def clean_stale_tmp(workspace: Path) -> list[Path]:
    """Remove build directories of runs that no longer exist (killed with -9, say)."""
    removed = []
    root = workspace / "artifacts" / ".tmp"
    for d in root.glob("*-*-*") if root.exists() else []:
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


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
