"""The Ray cluster a run uses: joining or starting it, what its nodes can hold, where a node of
the plan may run, and the workspace probe.

Before any node runs, two checks stop a run with exit 2 (a `SpecError`):
- a stage whose `resources:` no alive Ray node can hold (Ray would wait for it forever);
- a Ray node that cannot see the workspace: a probe task pinned to every alive node checks that
  the workspace exists there, is writable, and holds the token file the driver just wrote. On
  a cluster the workspace must live on storage every node shares; a node that sees another
  directory would write its outputs where nobody reads them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psft_orchestrator.spec.errors import SpecError

if TYPE_CHECKING:
    from psft_orchestrator.configs.stages import Resources
    from psft_orchestrator.plan.planner import Node

ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's resource for a node's accelerator type
ACCELERATOR_AMOUNT = 0.001  # what Ray's `accelerator_type=` option asks of that resource
START_ATTEMPTS = 3  # tries to start a local Ray cluster (see `connect`)
PROBE_TIMEOUT_S = float(os.environ.get("PSFT_PROBE_TIMEOUT_S", "180"))
# Ray's names for what `resources:` calls cpus and gpus, as said in messages.
SHOWN = {"CPU": "CPUs", "GPU": "GPUs"}


@dataclass(frozen=True)
class ClusterNode:
    """An alive Ray node: its id, host, address and total resources."""

    node_id: str
    host: str
    address: str
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def accelerator_type(self) -> str:
        types = [
            k[len(ACCELERATOR_PREFIX) :] for k in self.resources if k.startswith(ACCELERATOR_PREFIX)
        ]
        return ",".join(sorted(types))

    def __str__(self) -> str:
        return f"Ray node {self.node_id[:12]} on {self.host} ({self.address})"


# ---------------------------------------------------------------- connecting


def connect(address: str | None) -> bool:
    """Join `address`, or start a local cluster; returns True when we started it."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    options = dict(
        num_cpus=usable_cpus(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    # Ray gives its raylet a fixed 30 s to register, too short on a loaded machine: try again.
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            ray.init(**options)
            return True
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == START_ATTEMPTS:
                raise
            print(f"Ray start-up timed out; trying again ({e})", file=sys.stderr)
            ray.shutdown()
    return True


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    return max(1, n)


def alive_nodes() -> list[ClusterNode]:
    """The cluster's alive nodes (call once connected)."""
    import ray

    return [
        ClusterNode(
            n["NodeID"],
            n.get("NodeManagerHostname", "?"),
            n.get("NodeManagerAddress", "?"),
            dict(n.get("Resources", {})),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]


# ---------------------------------------------------------------- placement


def demand(resources: Resources, gpus: float | None = None) -> dict[str, float]:
    """What a node of the plan asks of one Ray node, in Ray's resource names."""
    wanted = {"CPU": resources.cpus, "GPU": resources.gpus if gpus is None else gpus}
    wanted.update(resources.custom)
    if resources.accelerator_type:
        wanted[ACCELERATOR_PREFIX + resources.accelerator_type] = ACCELERATOR_AMOUNT
    return {k: v for k, v in wanted.items() if v > 0}


def ray_options(resources: Resources, gpus: float) -> dict[str, Any]:
    """Keyword arguments for a Ray task's `.options()` that reserve `resources`."""
    options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": gpus}
    if resources.custom:
        options["resources"] = dict(resources.custom)
    if resources.accelerator_type:
        options["accelerator_type"] = resources.accelerator_type
    return options


def why_unplaceable(stage: str, wanted: dict[str, float], nodes: list[ClusterNode]) -> str | None:
    """Why no node of `nodes` can hold `wanted`, or None when one can."""
    if any(all(n.resources.get(k, 0.0) >= v for k, v in wanted.items()) for n in nodes):
        return None
    if not nodes:
        return f"stage {stage} cannot run: the Ray cluster has no alive node"
    for name, amount in wanted.items():
        largest = max(n.resources.get(name, 0.0) for n in nodes)
        if largest >= amount:
            continue
        if name.startswith(ACCELERATOR_PREFIX):
            types = sorted({n.accelerator_type for n in nodes if n.accelerator_type})
            return (
                f"stage {stage} asks for accelerator_type {name[len(ACCELERATOR_PREFIX) :]}; "
                f"the cluster's nodes have {', '.join(types) or 'no accelerator type'}"
            )
        shown = SHOWN.get(name, f"of custom resource {name!r}")
        return (
            f"stage {stage} asks for {_num(amount)} {shown}; the largest node has {_num(largest)}"
        )
    offered = "; ".join(f"{n}: {_resources_text(n.resources)}" for n in nodes)
    return (
        f"stage {stage} asks for {_resources_text(wanted)} on one node; no node has all of it "
        f"({offered})"
    )


def check_placement(nodes: list[Node], cluster: list[ClusterNode]) -> None:
    """Refuse (exit 2, at each stage's `resources:` line) the nodes no Ray node can hold."""
    problems, seen = [], set()
    for node in nodes:
        wanted = demand(node.stage_model.resources, run_gpus(node))
        why = why_unplaceable(node.stage, wanted, cluster)
        if why and (node.stage, why) not in seen:
            seen.add((node.stage, why))
            problems.append((node.resources_loc, f"{node.stage}.resources", why))
    if problems:
        raise SpecError(problems)


def run_gpus(node: Node) -> float:
    """GPUs the node's Ray task reserves: verl's GRPO reserves its own through placement
    groups, so its wrapper task asks for none."""
    if node.backend == "verl" and node.kind == "grpo":
        return 0.0
    return node.stage_model.resources.gpus


def _num(x: float) -> str:
    return f"{x:g}"


def _resources_text(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if not k.startswith(("node:", "memory", "object_"))}
    return ", ".join(f"{k}={_num(v)}" for k, v in sorted(shown.items())) or "nothing"


def placement() -> dict[str, Any]:
    """Inside a Ray task: where it runs (Ray node id, host, accelerator ids it was given)."""
    import ray

    ctx = ray.get_runtime_context()
    accelerators = {k: [str(i) for i in v] for k, v in ctx.get_accelerator_ids().items() if v}
    return {
        "ray_node_id": ctx.get_node_id(),
        "host": socket.gethostname(),
        "accelerators": accelerators,
    }


# ---------------------------------------------------------------- workspace probe


def probe_workspace(
    ws: Path, cluster: list[ClusterNode], timeout_s: float = PROBE_TIMEOUT_S
) -> None:
    """A task pinned to each alive node checks that it sees `ws`, writable, with the token file
    this process wrote; otherwise SpecError (exit 2) naming each node that does not."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    probe_dir = ws / ".probe"
    probe_dir.mkdir(parents=True, exist_ok=True)
    token_file = probe_dir / f"token-{token[:12]}"
    token_file.write_text(token)
    task = ray.remote(num_cpus=0, max_retries=0)(check_workspace_here)
    problems = []
    try:
        refs = [
            (
                node,
                task.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
                ).remote(str(ws), str(token_file), token),
            )
            for node in cluster
        ]
        deadline = time.monotonic() + timeout_s
        for node, ref in refs:
            why = _probe_answer(ref, max(1.0, deadline - time.monotonic()))
            if why:
                problems.append((None, "--workspace", f"{node}: {why}"))
    finally:
        token_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            probe_dir.rmdir()
    if problems:
        problems.append(
            (None, "", "the workspace must be on storage every Ray node shares (docs/cluster.md)")
        )
        raise SpecError(problems)


def _probe_answer(ref: Any, timeout_s: float) -> str | None:
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        return f"the workspace probe did not answer within {timeout_s:.0f} s"
    except ray.exceptions.RayError as e:
        return f"the workspace probe failed: {type(e).__name__}: {str(e)[:200]}"


def check_workspace_here(ws: str, token_file: str, token: str) -> str | None:
    """The probe's body, on one Ray node: None when the workspace is usable here, else why."""
    root = Path(ws)
    if not root.is_dir():
        return f"the workspace {ws} does not exist on this node"
    mine = root / ".probe" / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        mine.write_text("probe")
        mine.unlink()
    except OSError as e:
        return f"the workspace {ws} is not writable on this node ({e.strerror or e})"
    try:
        seen = Path(token_file).read_text()
    except OSError:
        return (
            f"does not see {token_file}, which the driver has just written: this node's {ws} "
            "is another directory"
        )
    if seen != token:
        return f"sees another {token_file} than the driver wrote: its {ws} is another directory"
    return None
