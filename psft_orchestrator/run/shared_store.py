"""The store shared across workspaces: finished nodes by fingerprint, so that specs sharing
ancestors compute them once (as Marin's executor shares one content-addressed store and claims
each step with a lease).

    <root>/objects/<fingerprint>/      a finished node directory, as in a workspace (_SUCCESS last)
    <root>/objects/.tmp/<fp>-<host>-<pid>-<rand>/   one being published (then renamed into place)
    <root>/claims/<fingerprint>.json   the lease of the run computing it: {owner, host, pid,
                                       since}; its mtime is the heartbeat
    <root>/workspaces/<key>.json       {"path": ...}: each workspace that used the store, so that
                                       `psft-results store gc` knows which indexes to ask

A node found in the store is linked (hard links; a copy across file systems) into the
workspace instead of computed; a node computed is published once it succeeded. Two runs that
want one fingerprint: the first claims it (an O_EXCL file) and keeps its claim fresh from a
heartbeat thread; the other waits until the entry appears, or until the claim is stale (no
heartbeat for `lease_s`: its run died), then takes it over. Hard links make the store and a
workspace share files, which is safe because finished node directories are never modified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from psft_orchestrator.envs import cache_dir

from .store import now_iso, write_json_atomic

ENV_ROOT = "PSFT_STORE"  # a directory, or "off"
LEASE_S = float(os.environ.get("PSFT_STORE_LEASE_S", "60"))  # a claim older than this is stale


def default_root() -> Path | None:
    """`$PSFT_STORE` (None when it says off), else `<cache dir>/store` (envs.cache_dir).

    Under the fake backend (PSFT_FAKE_BACKEND=1, a test tool) only an explicit $PSFT_STORE is
    used: its outputs carry the real nodes' fingerprints, and must never reach the user's store
    where a real run would take them for computed models."""
    value = os.environ.get(ENV_ROOT, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if not value and os.environ.get("PSFT_FAKE_BACKEND") == "1":
        return None
    return Path(value).expanduser() if value else cache_dir() / "store"


def check_root(root: Path, option: str) -> None:
    """SpecError (exit 2, before anything runs) when the store cannot be used at `root`."""
    from psft_orchestrator.spec.errors import SpecError

    from .workspace import directory_problem

    problem = directory_problem(Path(root).expanduser())
    if problem:
        raise SpecError.one(None, option, f"the shared store {root} {problem}")


class SharedStore:
    def __init__(self, root: Path, lease_s: float = LEASE_S, poll_s: float = 1.0):
        self.root = Path(root).expanduser().resolve()
        self.objects, self.claims = self.root / "objects", self.root / "claims"
        self.lease_s, self.poll_s = lease_s, poll_s

    # ------------------------------------------------------------ entries

    def entry(self, fingerprint: str) -> Path:
        return self.objects / fingerprint

    def has(self, fingerprint: str) -> bool:
        return (self.entry(fingerprint) / "_SUCCESS").exists()

    def fingerprints(self) -> list[str]:
        if not self.objects.is_dir():
            return []
        return sorted(p.name for p in self.objects.iterdir() if (p / "_SUCCESS").exists())

    def publish(self, fingerprint: str, node_dir: Path, replace: bool = False) -> bool:
        """Put a finished node directory into the store (atomic rename); False when it is
        there already (the same fingerprint: as good). With `replace` (the node was rerun by
        `--force`) the new directory takes the old entry's place: a forced rerun is what the
        user wants served from now on. Workspaces that linked the old entry keep their files
        (hard links or copies)."""
        if self.has(fingerprint) and not replace:
            return False
        tmp = self.objects / ".tmp" / f"{fingerprint}-{_owner_tag()}"
        link_tree(node_dir, tmp, skip=("_SUCCESS",))
        (tmp / "_SUCCESS").write_text(_now() + "\n")  # last: marks the entry complete
        if replace:
            self._retire(fingerprint)
        try:
            os.rename(tmp, self.entry(fingerprint))
        except OSError:  # another run published it first
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True

    def _retire(self, fingerprint: str) -> None:
        old = self.objects / ".tmp" / f"{fingerprint}-retired-{_owner_tag()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.entry(fingerprint), old)
        shutil.rmtree(old, ignore_errors=True)

    def materialize(self, fingerprint: str, dest: Path) -> None:
        """Link (or copy) the entry into `dest`, without its manifest and _SUCCESS: the run
        layer writes this workspace's own and renames `dest` into place."""
        link_tree(self.entry(fingerprint), dest, skip=("_SUCCESS", "manifest.json"))

    def stored_manifest(self, fingerprint: str) -> dict[str, Any]:
        return json.loads((self.entry(fingerprint) / "manifest.json").read_text())

    # ------------------------------------------------------------ claims

    @contextlib.contextmanager
    def claimed(self, fingerprint: str, owner: str) -> Iterator[bool]:
        """Wait until this run holds the claim on `fingerprint` (yields True, heartbeat kept
        while inside) or the entry is in the store (yields False: reuse it)."""
        path = self.claims / f"{fingerprint}.json"
        token = f"{owner}-{_owner_tag()}"
        while not self._try_claim(path, token):
            if self.has(fingerprint):
                yield False
                return
            self._take_over_if_stale(path)
            time.sleep(self.poll_s)
        if self.has(fingerprint):  # published between our look and our claim
            _release(path, token)
            yield False
            return
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(path, token, stop), daemon=True)
        beat.start()
        try:
            yield True
        finally:
            stop.set()
            beat.join()
            _release(path, token)

    def _try_claim(self, path: Path, token: str) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        return True

    def _take_over_if_stale(self, path: Path) -> None:
        """Remove a claim whose run died: its heartbeat stopped for longer than the lease, or
        (at once) its process on this host is gone. Under a lock that makes the look and the
        removal one step for every run that waits on it."""
        with open(path.with_suffix(".takeover"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > self.lease_s or _holder_gone(path):
                    print(f"note: taking over the stale store claim {path}", file=sys.stderr)
                    path.unlink()

    def _heartbeat(self, path: Path, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 4):
            if _claim_token(path) != token:
                print(f"warning: lost the store claim {path} (taken over)", file=sys.stderr)
                return
            with contextlib.suppress(OSError):
                os.utime(path)

    def active_claims(self) -> list[Path]:
        if not self.claims.is_dir():
            return []
        now = time.time()
        return [p for p in self.claims.glob("*.json") if now - _mtime(p, now) <= self.lease_s]

    # ------------------------------------------------------------ workspaces that use it

    def register(self, workspace: Path) -> None:
        ws = str(Path(workspace).resolve())
        key = hashlib.sha256(ws.encode()).hexdigest()[:16]
        write_json_atomic(self.root / "workspaces" / f"{key}.json", {"path": ws, "used": _now()})

    def workspaces(self) -> dict[Path, Path]:
        """Registry file -> workspace path."""
        reg = self.root / "workspaces"
        found = {}
        for p in sorted(reg.glob("*.json")) if reg.is_dir() else []:
            with contextlib.suppress(OSError, ValueError, KeyError):
                found[p] = Path(json.loads(p.read_text())["path"])
        return found


def link_tree(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the tree `src` to `dest` as hard links, a copy where links fail (another file
    system); top-level names in `skip` are left out."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        src,
        dest,
        copy_function=link_or_copy,
        ignore=lambda d, names: [n for n in names if Path(d) == Path(src) and n in skip],
        dirs_exist_ok=True,
    )


def _release(path: Path, token: str) -> None:
    if _claim_token(path) == token:
        path.unlink(missing_ok=True)


def _holder_gone(path: Path) -> bool:
    """True when the claim's process ran on this host and no longer exists."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return False  # being written, or unreadable: the lease decides
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim_token(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("token")
    except (OSError, ValueError):
        return None


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _now() -> str:
    return now_iso()


# ---------------------------------------------------------------- size and garbage collection


def usage(store: SharedStore) -> dict[str, Any]:
    """Entries, bytes on disk (a file linked twice counted once), workspaces, live claims."""
    seen, size = set(), 0
    for path in store.objects.rglob("*") if store.objects.is_dir() else []:
        with contextlib.suppress(OSError):
            st = path.lstat()
            if path.is_file() and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
    return {
        "root": str(store.root),
        "entries": len(store.fingerprints()),
        "bytes": size,
        "workspaces": len(store.workspaces()),
        "claims": len(store.active_claims()),
    }


def referenced(store: SharedStore) -> set[str]:
    """Fingerprints that the index of a registered workspace refers to. Workspaces that are
    gone are dropped from the registry; an index that cannot be read is an error (UsageError):
    gc never removes what it could not check."""
    from psft_orchestrator.results.store import ResultsError, UsageError, db_path, reader

    found: set[str] = set()
    for entry, ws in store.workspaces().items():
        if not ws.is_dir():
            entry.unlink(missing_ok=True)
            continue
        if not db_path(ws).exists():
            continue
        try:
            with reader(ws, wait_s=30) as con:
                found |= {fp for (fp,) in con.execute("SELECT fingerprint FROM nodes").fetchall()}
        except ResultsError as e:
            raise UsageError(
                f"store gc: cannot read the index of workspace {ws} ({e}); nothing was removed"
            ) from e
    return found


def collect_garbage(store: SharedStore, min_age_s: float, dry_run: bool = False) -> list[str]:
    """Remove entries no known index refers to, unless claimed or younger than `min_age_s`
    (a run may have published one and not indexed it yet). Each entry is renamed aside first,
    so no reader ever sees half of one. Returns the fingerprints removed."""
    keep = referenced(store) | {p.stem for p in store.active_claims()}
    now, removed = time.time(), []
    for fp in store.fingerprints():
        entry = store.entry(fp)
        if fp in keep or now - _mtime(entry / "_SUCCESS", now) < min_age_s:
            continue
        removed.append(fp)
        if not dry_run:
            doomed = store.objects / ".tmp" / f"gc-{fp}-{_owner_tag()}"
            doomed.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    return removed
