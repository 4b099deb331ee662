"""One run per workspace: an advisory file lock that dies with its process.

`flock` is released by the kernel when the holder exits, even on `kill -9`, so a stale lock
cannot exist; the lock file only records who holds it, for the waiting run's message.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WorkspaceBusy(Exception):
    pass


@contextmanager
def workspace_lock(workspace: Path, wait: bool = True, poll_s: float = 1.0) -> Iterator[None]:
    workspace.mkdir(parents=True, exist_ok=True)
    path = workspace / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if not wait:
                    raise WorkspaceBusy(
                        f"workspace {workspace} is in use by {holder}; wait for it, or use another --workspace"
                    ) from None
                if not told:
                    print(
                        f"waiting for the run holding {workspace} ({holder}) to finish...",
                        file=sys.stderr,
                    )
                    told = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(
            fd, json.dumps({"pid": os.getpid(), "since": time.time(), "argv": sys.argv}).encode()
        )
        yield
    finally:
        os.close(fd)  # releases the flock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info.get('pid')}, running `{' '.join(info.get('argv', []))[:80]}`"
    except (OSError, ValueError):
        return "another process"
