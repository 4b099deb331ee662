"""The store shared across workspaces: claims between real processes (lease, heartbeat, stale
take-over), two concurrent `psft-run`s that compute each node once, reuse in a new workspace,
`psft-results store` / `store gc`, and bad input for the new options."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psft_orchestrator.run.shared_store import SharedStore

from .conftest import SMALL, psft_run, run_cmd
from .ray_cluster import LocalRayCluster

# Every test here runs with a fresh shared store of its own (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("private_store")

FP = "ab" * 32


def _hold_claim(root: str, seconds: float, publish_from: str | None, lease_s: float) -> None:
    """A child process: claim FP, hold it `seconds` (heartbeat running), maybe publish."""
    store = SharedStore(Path(root), lease_s=lease_s, poll_s=0.1)
    with store.claimed(FP, "holder") as ours:
        assert ours
        time.sleep(seconds)
        if publish_from:
            store.publish(FP, Path(publish_from))


def _node_dir(tmp_path: Path) -> Path:
    d = tmp_path / "node"
    (d / "outputs").mkdir(parents=True)
    (d / "outputs" / "data.jsonl").write_text('{"x": 1}\n')
    (d / "manifest.json").write_text("{}")
    (d / "_SUCCESS").write_text("x")
    return d


def _wait_for(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_waiting_process_gets_the_entry_the_claim_holder_publishes(tmp_path):
    root = tmp_path / "store"
    holder = mp.get_context("spawn").Process(
        target=_hold_claim, args=(str(root), 3.0, str(_node_dir(tmp_path)), 1.0)
    )
    holder.start()
    try:
        _wait_for(root / "claims" / f"{FP}.json")
        # The holder's lease (1 s) is shorter than its work (3 s): only its heartbeat keeps the
        # claim from going stale and being taken over.
        store = SharedStore(root, lease_s=1.0, poll_s=0.1)
        with store.claimed(FP, "waiter") as ours:
            assert not ours  # never claimed: the entry appeared
        assert store.has(FP)
        assert (store.entry(FP) / "outputs" / "data.jsonl").read_text() == '{"x": 1}\n'
    finally:
        holder.join(30)
    assert holder.exitcode == 0
    assert not (root / "claims" / f"{FP}.json").exists()  # released


def test_the_claim_of_a_killed_process_is_taken_over(tmp_path):
    root = tmp_path / "store"
    holder = mp.get_context("spawn").Process(target=_hold_claim, args=(str(root), 600, None, 1.0))
    holder.start()
    claim = root / "claims" / f"{FP}.json"
    try:
        _wait_for(claim)
        time.sleep(1.5)  # the heartbeat keeps a live claim fresh past its lease
        assert time.time() - claim.stat().st_mtime < 1.0
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        # Its process on this host is gone: taken over at once, not after the (long) lease.
        store = SharedStore(root, lease_s=300, poll_s=0.1)
        t0 = time.monotonic()
        with store.claimed(FP, "taker") as ours:
            assert ours and json.loads(claim.read_text())["pid"] == os.getpid()
        assert time.monotonic() - t0 < 30
        assert not claim.exists()
    finally:
        if holder.is_alive():
            holder.kill()


def test_a_claim_from_another_host_is_taken_over_when_its_heartbeat_stops(tmp_path):
    """Its process cannot be looked up from here: only the lease tells that its run died."""
    store = SharedStore(tmp_path / "store", lease_s=1.0, poll_s=0.1)
    claim = store.claims / f"{FP}.json"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"token": "x", "host": "elsewhere", "pid": 1, "since": "-"}))
    t0 = time.monotonic()
    with store.claimed(FP, "taker") as ours:
        assert ours
    assert 0.9 < time.monotonic() - t0 < 30


def test_publish_replaces_an_entry_only_when_asked(tmp_path):
    """A `--force` rerun replaces its store entry; a plain publish keeps the first one. A
    directory linked from the old entry keeps its content."""
    store = SharedStore(tmp_path / "store")
    first, second = _node_dir(tmp_path / "1"), _node_dir(tmp_path / "2")
    (second / "outputs" / "data.jsonl").write_text('{"x": 2}\n')
    assert store.publish(FP, first)
    linked = tmp_path / "linked"
    store.materialize(FP, linked)
    assert not store.publish(FP, second)
    assert (store.entry(FP) / "outputs" / "data.jsonl").read_text() == '{"x": 1}\n'
    assert store.publish(FP, second, replace=True)
    assert (store.entry(FP) / "outputs" / "data.jsonl").read_text() == '{"x": 2}\n'
    assert store.has(FP) and (linked / "outputs" / "data.jsonl").read_text() == '{"x": 1}\n'
    assert not [p for p in (store.objects / ".tmp").iterdir()], "nothing left in .tmp"


def _manifests(ws: Path) -> dict[str, dict]:
    found = {}
    for p in ws.glob("artifacts/*/*/manifest.json"):
        m = json.loads(p.read_text())
        found[m["node_id"]] = m
    return found


@pytest.fixture(scope="module")
def ray_address():
    """One Ray cluster (2 CPUs) that this module's runs join: one start-up instead of one per
    run, which a loaded machine may miss (Ray gives it a fixed 30 s)."""
    cluster = LocalRayCluster()
    try:
        cluster.add_node({}, num_cpus=2, head=True)
        cluster.wait_for_nodes(1)
        yield cluster.address
    finally:
        cluster.stop()


@pytest.mark.slow
def test_two_concurrent_runs_on_one_store_compute_each_node_once(tmp_path, fake_env, ray_address):
    env = {**fake_env, "PSFT_FAKE_SLEEP": "6"}
    ray = ("--ray-address", ray_address)
    procs = [
        subprocess.Popen(
            run_cmd(str(SMALL), "--workspace", str(tmp_path / ws), "--no-prefect", *ray),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ws in ("a", "b")
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
    a, b = _manifests(tmp_path / "a"), _manifests(tmp_path / "b")
    assert sorted(a) == sorted(b) and len(a) == 4
    for node_id in a:
        computed = [m for m in (a[node_id], b[node_id]) if not m["reused_from"]]
        assert len(computed) == 1, node_id  # one run computed it, the other linked it
        assert a[node_id]["fingerprint"] == b[node_id]["fingerprint"]
    for ws, found in (("a", a), ("b", b)):  # each manifest speaks of its own workspace
        for m in found.values():
            paths = [
                r["path"] for v in m["inputs"].values() for r in (v if isinstance(v, list) else [v])
            ]
            assert paths and all(p.startswith(str(tmp_path / ws)) for p in paths), paths
    records = [json.loads(next((tmp_path / ws / "runs").glob("*.json")).read_text()) for ws in "ab"]
    statuses = [n["status"] for r in records for n in r["nodes"]]
    assert statuses.count("success") == 4 and statuses.count("cached") == 4
    store = SharedStore(Path(fake_env["PSFT_STORE"]))
    assert len(store.fingerprints()) == 4 and not list(store.claims.glob("*.json"))


@pytest.mark.slow
def test_a_new_workspace_reuses_the_store_then_gc_removes_what_no_index_uses(
    tmp_path, fake_env, ray_address
):
    ray = ("--ray-address", ray_address)
    first = psft_run(
        str(SMALL), "--workspace", str(tmp_path / "a"), "--no-prefect", *ray, env=fake_env
    )
    assert first.returncode == 0, first.stdout + first.stderr
    second = psft_run(str(SMALL), "--workspace", str(tmp_path / "b"), env=fake_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 cached" in second.stdout and second.stdout.count("(shared store)") == 4
    assert not (tmp_path / "b" / ".prefect").exists()  # nothing to compute: no Prefect (nor Ray)
    b = _manifests(tmp_path / "b")
    assert all(m["reused_from"] for m in b.values())
    index = subprocess.run(
        [
            sys.executable,
            "-m",
            "psft_orchestrator.cli.results",
            "--workspace",
            str(tmp_path / "b"),
            "nodes",
            "latest",
            "--format",
            "json",
        ],
        env=fake_env,
        capture_output=True,
        text=True,
    )
    assert index.returncode == 0 and len(json.loads(index.stdout)) == 4, index.stderr

    # A third workspace with a changed lr adds 4 entries (train changed, eval below it).
    other = psft_run(
        str(SMALL),
        "--workspace",
        str(tmp_path / "c"),
        "--no-prefect",
        "--set",
        "train.lr=3e-6",
        *ray,
        env=fake_env,
    )
    assert other.returncode == 0, other.stdout + other.stderr
    report = _results_store(fake_env, "--format", "json")
    assert report["entries"] == 8 and report["workspaces"] == 3 and report["bytes"] > 0
    subprocess.run(["rm", "-rf", str(tmp_path / "c")], check=True)
    gone = _results_store(fake_env, "gc", "--min-age", "0", "--format", "json")
    kept = {m["fingerprint"] for m in b.values()}
    assert len(gone["removed"]) == 4 and not set(gone["removed"]) & kept
    assert gone["entries"] == 4 and gone["workspaces"] == 2


def _results_store(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.results", "store", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_store_off_in_the_spec_or_by_flag(tmp_path, fake_env):
    """--plan accepts both switches; a bad `store:` value is refused at its line."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SMALL.read_text() + "store: false\n")
    ok = psft_run(str(spec), "--workspace", str(tmp_path / "ws"), "--plan", env=fake_env)
    assert ok.returncode == 0, ok.stderr
    spec.write_text(SMALL.read_text() + "store: maybe\n")
    bad = psft_run(str(spec), "--workspace", str(tmp_path / "ws"), "--plan", env=fake_env)
    line = len(SMALL.read_text().splitlines()) + 1
    assert bad.returncode == 2 and f"{spec}:{line}" in bad.stderr and "store" in bad.stderr
    both = psft_run(str(SMALL), "--store", str(tmp_path), "--no-store", "--plan", env=fake_env)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert not (tmp_path / "ws").exists()


def test_a_store_that_is_a_file_is_refused_before_anything_is_written(tmp_path, fake_env):
    afile = tmp_path / "store-file"
    afile.write_text("not a directory")
    for args in (["--plan"], []):
        proc = psft_run(
            str(SMALL),
            "--workspace",
            str(tmp_path / "ws"),
            "--store",
            str(afile),
            *args,
            env=fake_env,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"--store: the shared store {afile} is a file, not a directory" in proc.stderr
    assert not (tmp_path / "ws").exists()


def test_results_store_refuses_bad_input(tmp_path, fake_env):
    afile = tmp_path / "file"
    afile.write_text("x")
    for args, message in (
        (["--min-age", "-1"], "--min-age must be >= 0"),
        (["--store", str(afile)], f"the shared store {afile} is a file"),
        (["gc", "--store", str(afile)], f"the shared store {afile} is a file"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "psft_orchestrator.cli.results", "store", *args],
            env=fake_env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    off = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.results", "store"],
        env={**fake_env, "PSFT_STORE": "off"},
        capture_output=True,
        text=True,
    )
    assert off.returncode == 2 and "the shared store is off" in off.stderr


def test_fake_backend_never_uses_the_default_store(monkeypatch) -> None:
    """Fake outputs carry real fingerprints: only an explicitly named store may hold them."""
    from psft_orchestrator.envs import cache_dir
    from psft_orchestrator.run.shared_store import default_root

    monkeypatch.delenv("PSFT_STORE", raising=False)
    monkeypatch.delenv("PSFT_FAKE_BACKEND", raising=False)
    assert default_root() == cache_dir() / "store"
    monkeypatch.setenv("PSFT_FAKE_BACKEND", "1")
    assert default_root() is None
    monkeypatch.setenv("PSFT_STORE", "/tmp/explicit-store")
    assert str(default_root()) == "/tmp/explicit-store"
