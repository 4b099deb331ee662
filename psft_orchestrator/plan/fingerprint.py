"""Node fingerprints: a hash of everything that determines a node's output.

fingerprint = sha256(kind, backend, backend version, resolved config, parents' fingerprints,
input data content hashes). Labels, resources and descriptions are left out: they change how a
node is shown or scheduled, not what it computes.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import psft_orchestrator

# Bump when the native trainer's numerics change, so old artifacts are not reused.
NATIVE_VERSION = f"native-{psft_orchestrator.__version__}"
BACKEND_PACKAGES = {
    "verl": "verl",
    "llamafactory": "llamafactory",
    "lmeval": "lm_eval",
    "vllm": "vllm",
}
NOT_IN_FINGERPRINT = ("name", "description", "labels", "resources", "method", "model", "data")


def backend_version(backend: str) -> str:
    """Version string of a backend, without importing it (fast enough for --plan)."""
    if backend == "native":
        return NATIVE_VERSION
    pkg = BACKEND_PACKAGES[backend]
    try:
        return f"{backend}-{metadata.version(pkg)}"
    except metadata.PackageNotFoundError:
        return f"{backend}-not-installed"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_hash_cache: dict[tuple[str, int, int], str] = {}


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (names, sizes and bytes).

    Cached per process by (path, size, mtime) so that re-planning is cheap.
    """
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0" + content_hash(f).encode())
        return h.hexdigest()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def node_fingerprint(
    kind: str, backend: str, config: dict[str, Any], parents: dict[str, str], inputs: dict[str, str]
) -> str:
    payload = {
        "kind": kind,
        "backend": backend,
        "backend_version": backend_version(backend),
        "config": {k: v for k, v in config.items() if k not in NOT_IN_FINGERPRINT},
        "parents": parents,
        "inputs": inputs,
    }
    return sha256(canonical(payload))
