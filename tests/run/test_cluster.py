"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`), the
nodes with different custom resources; `psft-run --ray-address` places each stage by its
`resources:`, refuses a stage no node can hold, and refuses a node that cannot see the
workspace. The cluster is torn down (only its own processes) even when a test fails.

Fake backend (PSFT_FAKE_BACKEND=1): the point is placement, not training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import psft_run
from .ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow

SPEC = """\
name: placed
models:
  m: {toy: micro}
datasets:
  d: {toy: math_sft, n: 8}
  b: {toy: math_bench, n: 4}
defaults: {train_batch_size: 8}
stages:
  - name: train
    kind: sft
    model: m
    data: d
    resources: {cpus: 1, custom: {head_box: 1}}
  - name: eval
    kind: eval
    model: {from: train}
    suites: [{type: math, benchmarks: [b]}]
    resources: {cpus: 1, custom: {worker_box: 1}}
"""


@pytest.fixture(scope="module")
def cluster():
    c = LocalRayCluster()
    try:
        c.add_node({"head_box": 1}, head=True)
        c.add_node({"worker_box": 1})
        c.nodes_at_start = c.wait_for_nodes(2)
        yield c
    finally:
        c.stop()
        assert not c.pids(), "the test cluster's processes outlived the teardown"


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _run_on(cluster: LocalRayCluster, spec: Path, ws: Path, fake_env: dict[str, str]):
    """psft-run SPEC on the cluster (from --ray-address only, whatever $RAY_ADDRESS says)."""
    env = {k: v for k, v in fake_env.items() if k != "RAY_ADDRESS"}
    args = ("--workspace", str(ws), "--no-prefect", "--ray-address", cluster.address)
    return psft_run(str(spec), *args, env=env, timeout=900)


def test_each_stage_runs_on_the_node_its_resources_place_it(tmp_path, cluster, fake_env):
    ws = tmp_path / "ws"
    proc = _run_on(cluster, _spec(tmp_path), ws, fake_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_resource = {
        res: node_id
        for node_id, resources in cluster.nodes_at_start.items()
        for res in ("head_box", "worker_box")
        if res in resources
    }
    assert len(set(by_resource.values())) == 2  # two distinct Ray nodes
    placed = {
        m["stage"]: m
        for m in (json.loads(p.read_text()) for p in ws.glob("artifacts/*/*/manifest.json"))
    }
    assert placed["train"]["ray_node_id"] == by_resource["head_box"]
    assert placed["eval"]["ray_node_id"] == by_resource["worker_box"]
    for m in placed.values():
        assert m["host"] and m["accelerators"] == {} and m["accelerator_type"] == ""
    assert not (ws / ".probe").exists()  # the probe's token is cleaned up


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{cpus: 4, custom: {head_box: 1}}", "stage train asks for 4 CPUs; the largest node has 1"),
        ("{gpus: 8}", "stage train asks for 8 GPUs; the largest node has 0"),
        (
            "{custom: {tpu_pod: 2}}",
            "stage train asks for 2 of custom resource 'tpu_pod'; the largest node has 0",
        ),
        ("{accelerator_type: H100}", "asks for accelerator_type H100; the cluster's nodes have"),
        ("{custom: {head_box: 1, worker_box: 1}}", "no node has all of it"),
    ],
)
def test_a_stage_no_node_can_hold_is_refused_before_anything_runs(
    tmp_path, cluster, fake_env, resources, message
):
    text = SPEC.replace("resources: {cpus: 1, custom: {head_box: 1}}", f"resources: {resources}")
    spec = _spec(tmp_path, text)
    line = text.splitlines().index(f"    resources: {resources}") + 1
    ws = tmp_path / "ws"
    proc = _run_on(cluster, spec, ws, fake_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{spec}:{line}: train.resources: " in proc.stderr and message in proc.stderr
    left = sorted(p.name for p in ws.iterdir()) if ws.exists() else []
    # No node ran: no artifacts, run log, run record or index. (The toy inputs, a cache that
    # is built while Ray starts, may be there.)
    assert set(left) <= {".lock", "inputs"}, left


def test_a_node_that_cannot_see_the_workspace_stops_the_run(tmp_path, cluster, fake_env):
    """Runs last in this module: it adds a third node, in its own mount namespace, that sees an
    empty tmpfs where the workspace is."""
    shared = tmp_path / "shared"
    ws = shared / "ws"
    ws.mkdir(parents=True)
    before = set(cluster.nodes())
    cluster.add_node({"blind_box": 1}, hide=shared)
    blind = next(iter(set(cluster.wait_for_nodes(3)) - before))
    proc = _run_on(cluster, _spec(tmp_path), ws, fake_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"Ray node {blind[:12]}" in proc.stderr
    assert f"the workspace {ws.resolve()} does not exist on this node" in proc.stderr
    assert proc.stderr.count("error: --workspace: Ray node ") == 1  # only the blind node
    assert not list(ws.glob("artifacts/*/*"))
