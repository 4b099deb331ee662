"""Where the project looks for the vLLM environment."""

import sys
from pathlib import Path

from psft_orchestrator import envs


def test_repo_root_is_the_checkout_holding_the_package():
    # envs.py moved from backends/ to the package top once; the root must still be the clone.
    root = envs.repo_root()
    assert (root / "psft_orchestrator" / "envs.py").is_file()
    assert (root / "pyproject.toml").is_file()


def test_vllm_python_prefers_the_spec_then_the_linked_env(monkeypatch):
    monkeypatch.delenv("PSFT_VLLM_PYTHON", raising=False)
    assert envs.vllm_python({"vllm": "/opt/vllm/bin/python"}) == "/opt/vllm/bin/python"
    linked = envs.repo_root() / envs.VLLM_ENV_LINK / "bin" / "python"
    expected = str(linked) if linked.exists() else sys.executable
    assert envs.vllm_python({}) == expected
    assert Path(envs.vllm_python({})).name.startswith("python")
