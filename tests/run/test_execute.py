"""The run layer for real: Ray local cluster, Prefect, artifact store, failure policy, lock, resume.

Nodes run on the fake backend (PSFT_FAKE_BACKEND=1) so that each test takes seconds; the
native backend runs end to end in tests/e2e.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from psft_orchestrator.contract import Manifest

from .conftest import SMALL, psft_run, run_cmd

pytestmark = pytest.mark.slow
NODES = ["train[method=SFT]", "train[method=PSFT]", "eval[method=SFT]", "eval[method=PSFT]"]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def manifests(ws: Path) -> dict[str, dict]:
    return {
        json.loads(p.read_text())["node_id"]: json.loads(p.read_text())
        for p in ws.glob("artifacts/*/*/manifest.json")
    }


def test_run_then_cached_rerun(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    first = psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", env=fake_env)
    assert first.returncode == 0, first.stdout + first.stderr
    found = manifests(ws)
    assert sorted(found) == sorted(NODES)
    for node_id, m in found.items():
        Manifest.model_validate(m)  # what the run layer wrote is what ingest will read
        d = ws / "artifacts" / m["stage"] / m["fingerprint"][:16]
        assert (
            (d / "_SUCCESS").exists()
            and (d / "metrics.jsonl").exists()
            and (d / "logs" / "stage.log").exists()
        )
        assert m["status"] == "success" and m["labels"]["method"] in ("SFT", "PSFT")
        assert (
            d / ("outputs/scores.json" if node_id.startswith("eval") else "outputs/model")
        ).exists()
    assert (
        found["eval[method=PSFT]"]["parents"][0]["fingerprint"]
        == found["train[method=PSFT]"]["fingerprint"]
    )
    again = psft_run(str(SMALL), "--workspace", str(ws), env=fake_env)
    assert again.returncode == 0 and "4 cached" in again.stdout
    assert manifests(ws) == found  # nothing was redone
    records = sorted((ws / "runs").glob("*.json"))
    assert len(records) == 2 and {
        n["status"] for n in json.loads(records[-1].read_text())["nodes"]
    } == {"cached"}


def test_failure_skips_downstream_and_independent_branch_finishes(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    env = {**fake_env, "PSFT_FAKE_FAIL": "train[method=PSFT]"}
    proc = psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", env=env)
    assert proc.returncode == 1
    assert "[FAIL] train[method=PSFT] after " in proc.stdout
    assert "fake failure requested" in proc.stdout  # the log tail is in the message
    assert proc.stdout.count("--- last lines of") == 1  # the failure is printed once, as lines
    assert "fake failure" not in proc.stderr and "\\n" not in proc.stdout
    record = json.loads(next((ws / "runs").glob("*.json")).read_text())
    status = {n["node_id"]: n["status"] for n in record["nodes"]}
    assert status == {
        "train[method=SFT]": "success",
        "train[method=PSFT]": "failed",
        "eval[method=SFT]": "success",
        "eval[method=PSFT]": "upstream_failed",
    }
    assert list((ws / "artifacts" / ".failed").glob("train-*/logs/stage.log"))
    # The failure was deterministic, so it was tried once.
    assert proc.stdout.count("[run ] train[method=PSFT]") == 1


def test_exit_code_decides_retry(tmp_path: Path, fake_env):
    """Exit 3 (deterministic) is tried once; any other exit code is retried once (real Ray)."""
    ws = tmp_path / "ws"
    env = {
        **fake_env,
        "PSFT_FAKE_FAIL": "train[method=PSFT]",
        "PSFT_FAKE_FLAKY": "train[method=SFT]",
    }
    proc = psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("[run ] train[method=PSFT]") == 1
    assert proc.stdout.count("[run ] train[method=SFT]") == 2
    assert "RuntimeError: fake flaky failure" in proc.stdout
    attempts = sorted(p.name.split("-")[0] for p in (ws / "artifacts" / ".failed").iterdir())
    assert attempts == ["train", "train", "train"]  # each attempt's directory is kept
    record = json.loads(next((ws / "runs").glob("*.json")).read_text())
    assert {n["node_id"]: n["status"] for n in record["nodes"]} == {
        "train[method=SFT]": "failed",
        "train[method=PSFT]": "failed",
        "eval[method=SFT]": "upstream_failed",
        "eval[method=PSFT]": "upstream_failed",
    }


def test_force_reruns_node_and_downstream(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    assert (
        psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", env=fake_env).returncode == 0
    )
    before = manifests(ws)
    proc = psft_run(
        str(SMALL),
        "--workspace",
        str(ws),
        "--no-prefect",
        "--force",
        "train[method=SFT]",
        env=fake_env,
    )
    assert proc.returncode == 0, proc.stderr
    after = manifests(ws)
    changed = {k for k in after if after[k]["run_id"] != before[k]["run_id"]}
    assert changed == {"train[method=SFT]", "eval[method=SFT]"}
    assert list(ws.glob("artifacts/train/.forced/*"))  # the old artifact was kept, not deleted


def test_max_parallel_one_runs_nodes_one_at_a_time(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    env = {**fake_env, "PSFT_FAKE_SLEEP": "3"}
    proc = psft_run(
        str(SMALL), "--workspace", str(ws), "--no-prefect", "--max-parallel", "1", env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = sorted((m["started_at"], m["ended_at"]) for m in manifests(ws).values())
    assert len(spans) == 4
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans


def test_concurrent_runs_do_not_double_execute(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    env = {**fake_env, "PSFT_FAKE_SLEEP": "2"}
    cmd = run_cmd(str(SMALL), "--workspace", str(ws), "--no-prefect")
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60  # until run A holds the lock (the lock file names its pid)
    while time.time() < deadline and f'"pid": {a.pid}' not in _read(ws / ".lock"):
        time.sleep(0.1)
    busy = psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", "--no-wait", env=env)
    assert busy.returncode == 1 and "is in use by pid" in busy.stderr
    b = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0
    assert "waiting for the run holding" in err_b
    assert "4 cached" in out_b  # the second run found everything done
    assert len({m["run_id"] for m in manifests(ws).values()}) == 1


def test_kill_9_then_resume(tmp_path: Path, fake_env):
    ws = tmp_path / "ws"
    env = {**fake_env, "PSFT_FAKE_SLEEP": "6"}
    cmd = run_cmd(str(SMALL), "--workspace", str(ws), "--no-prefect")
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(ws.glob("artifacts/.tmp/*/metrics.jsonl")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not manifests(ws), "nothing should have finished yet"
    assert list(ws.glob("artifacts/.tmp/*"))  # the interrupted attempt left its build directory
    again = psft_run(
        str(SMALL), "--workspace", str(ws), "--no-prefect", env={**fake_env, "PSFT_FAKE_SLEEP": "0"}
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(manifests(ws)) == sorted(NODES)
    assert not [
        p for p in ws.glob("artifacts/.tmp/*") if p.is_dir()
    ]  # no stale build directory left
    assert list(ws.glob("artifacts/.failed/*-killed/logs/stage.log"))  # the killed attempt is kept


def test_prefect_flow_and_task_states(tmp_path: Path, monkeypatch):
    """A real Prefect server (test harness): the flow run and one task run per node, with states."""
    monkeypatch.setenv("PSFT_FAKE_BACKEND", "1")
    monkeypatch.setenv("PSFT_FAKE_FAIL", "train[method=PSFT]")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("PSFT_FAKE_SLEEP", "5")  # long enough for the progress watcher to report
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterType,
        FlowRunFilter,
        FlowRunFilterName,
    )
    from prefect.testing.utilities import prefect_test_harness

    from psft_orchestrator.plan.planner import build_plan
    from psft_orchestrator.run.execute import run_plan

    plan = build_plan(SMALL, workspace=tmp_path / "ws")
    with prefect_test_harness(server_startup_timeout=180):
        ok = run_plan(plan, use_prefect=True, quiet=True)
        assert ok is False
        run_id = json.loads(next((tmp_path / "ws" / "runs").glob("*.json")).read_text())["run_id"]
        with get_client(sync_client=True) as client:
            flows = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_id]))
            )
            assert len(flows) == 1
            assert flows[0].state.name == "Failed"  # a failed node fails the flow run
            tasks = client.read_task_runs()
            progress = client.read_artifacts(
                artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
            )
            tables = client.read_artifacts(
                artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["table"]))
            )
            states = {
                t.name.rsplit("-", 1)[0] if t.name not in NODES else t.name: t.state.name
                for t in tasks
            }
    assert any(a.data and float(a.data) > 0 for a in progress), progress  # training progress bars
    assert any(a.key == "run-summary" for a in tables)
    by_node = {n: s for n, s in states.items() if n in NODES}
    assert by_node == {
        "train[method=SFT]": "Completed",
        "train[method=PSFT]": "Failed",
        "eval[method=SFT]": "Completed",
        "eval[method=PSFT]": "UpstreamFailed",
    }


def test_all_cached_run_starts_neither_ray_nor_prefect(tmp_path: Path, fake_env, monkeypatch):
    ws = tmp_path / "ws"
    assert (
        psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", env=fake_env).returncode == 0
    )
    from psft_orchestrator.plan.planner import build_plan
    from psft_orchestrator.run import execute

    def forbidden(*args, **kwargs):
        raise AssertionError("an all-cached run must not start Ray or Prefect")

    monkeypatch.setattr(execute, "_start_ray", forbidden)
    monkeypatch.setattr(execute.prefect_flow, "mirror", forbidden)
    assert execute.run_plan(build_plan(SMALL, workspace=ws), use_prefect=True, quiet=True)


def test_unreachable_prefect_costs_the_record_not_the_run(tmp_path: Path, fake_env):
    """Prefect only mirrors the run: with its API unreachable every node still runs, and the
    terminal says the run was not recorded."""
    env = {
        **fake_env,
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "PREFECT_CLIENT_MAX_RETRIES": "0",
    }
    proc = psft_run(str(SMALL), "--workspace", str(tmp_path / "ws"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: Prefect could not record this run" in proc.stdout
    assert sorted(manifests(tmp_path / "ws")) == sorted(NODES)


def test_lost_ray_worker_is_retried(tmp_path: Path, fake_env):
    """Killing the Ray worker mid-node is an infrastructure failure: retried once, then success."""
    ws = tmp_path / "ws"
    env = {**fake_env, "PSFT_FAKE_KILL_WORKER": str(tmp_path / "killed-once")}
    proc = psft_run(str(SMALL), "--workspace", str(ws), "--no-prefect", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    victim = (tmp_path / "killed-once").read_text()
    assert proc.stdout.count(f"[run ] {victim}") == 2 and f"[run ] {victim} " in proc.stdout
    assert "retry" in proc.stdout
    assert sorted(manifests(ws)) == sorted(NODES)
    assert manifests(ws)[victim]["attempt"] == 2
