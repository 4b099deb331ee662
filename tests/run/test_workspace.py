"""A --workspace that is not what it seems: a file, a read-only directory, a corrupt index.
Each gives a clear message and exit status 2, before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SMALL, psft_run, run_cmd


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("flags", [[], ["--plan"]], ids=["run", "plan"])
def test_workspace_is_a_file(tmp_path: Path, fake_env, flags):
    target = tmp_path / "results.txt"
    target.write_text("not a workspace\n")
    for ws in (target, target / "sub"):
        proc = psft_run(str(SMALL), "--workspace", str(ws), *flags, env=fake_env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "--workspace" in proc.stderr and "not a directory" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert listing(tmp_path) == {"results.txt": b"not a workspace\n"}


def test_read_only_workspace(tmp_path: Path, fake_env):
    # root ignores file modes; drop the capability that lets it (as a read-only mount would)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv (util-linux) is missing")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    ro = tmp_path / "ro"
    (ro / "ws").mkdir(parents=True)
    (ro / "ws").chmod(0o555)
    for ws in (ro / "ws", ro / "ws" / "new"):
        proc = subprocess.run(
            [*prefix, *run_cmd(str(SMALL), "--workspace", str(ws))],
            env=fake_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "is not writable" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    (ro / "ws").chmod(0o755)
    assert listing(ro) == {}


def test_corrupt_index_suggests_reindex(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "index.duckdb").write_bytes(os.urandom(4096))
    before = listing(ws)
    for flags in ([], ["--plan"]):
        proc = psft_run(str(SMALL), "--workspace", str(ws), *flags, env=fake_env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"psft-results --workspace {ws} reindex" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert listing(ws) == before, "nothing may be written"
    # The suggested command works on the damaged file, and then the workspace is usable.
    fix = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.results", "--workspace", str(ws), "reindex"],
        env=fake_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fix.returncode == 0, fix.stderr
    proc = psft_run(str(SMALL), "--workspace", str(ws), "--plan", env=fake_env)
    assert proc.returncode == 0, proc.stderr
