"""Node fingerprints: a hash of everything that determines a node's output.

fingerprint = sha256(kind, backend, backend version, the stage's `param` fields, parents'
fingerprints, input data content hashes). Fields declared with `setting` (labels, resources,
log/eval/save cadence, ...) are left out: they change how a node is run, logged or shown, not
what it computes (see `psft_orchestrator.identity`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

import psft_orchestrator
from psft_orchestrator.configs.registry import REGISTRY
from psft_orchestrator.identity import fingerprint_fields

# Bump when the native trainer's numerics change, so old artifacts are not reused.
NATIVE_VERSION = f"native-{psft_orchestrator.__version__}"


def backend_version(backend: str, interpreters: dict[str, str] | None = None) -> str:
    """Version string of a backend, read from the environment that runs it (vllm: .venv-vllm or
    `interpreters.vllm`), without importing it (fast enough for --plan)."""
    from psft_orchestrator.envs import backend_python, installed_version

    if backend == "native":
        return NATIVE_VERSION
    pkg = REGISTRY[backend].package or psft_orchestrator.__name__
    version = installed_version(backend_python(interpreters or {}, backend), pkg)
    return f"{backend}-{version or 'not-installed'}"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_payload(
    kind: str,
    backend: str,
    stage_model: type[BaseModel],
    config: dict[str, Any],
    parents: dict[str, str],
    inputs: dict[str, Any],
    version: str | None = None,
) -> dict[str, Any]:
    """What a node's fingerprint hashes: the `param` fields of its config (see `identity`), kind,
    backend and its `version` (default: `backend_version(backend)`), the parents' fingerprints
    and the content hashes of declared inputs."""
    return {
        "kind": kind,
        "backend": backend,
        "backend_version": version or backend_version(backend),
        "config": {k: config[k] for k in fingerprint_fields(stage_model)},
        "parents": parents,
        "inputs": inputs,
    }


def node_fingerprint(payload: dict[str, Any]) -> str:
    return sha256(canonical(payload))
