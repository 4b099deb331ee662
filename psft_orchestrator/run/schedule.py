"""The DAG schedule of one run: a thread per node waits for its parents, then runs the node, or
skips it when a parent failed. `NodeResult` is what a node's run comes to.

The same `Schedule` drives the real run (`execute.RunContext.execute`) and the Prefect flow run
that mirrors it (`prefect_flow.mirror`): the mirror's task for a node waits for the real
node's result, so the flow run has the DAG's shape without sitting on the nodes' critical path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psft_orchestrator.contract import NodeStatus

if TYPE_CHECKING:
    from psft_orchestrator.plan.planner import Node


@dataclass
class NodeResult:
    node_id: str
    stage: str
    fingerprint: str
    status: NodeStatus
    duration_s: float = 0.0
    backend_s: float | None = None
    error: str = ""
    log: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    reused: bool = False  # linked from the shared store, not computed (status "cached")

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "upstream_failed")


class Schedule:
    """Runs `execute(node)` for every node once its parents are done; a node with a failed
    parent gets `skip(node, why)` instead. `start()` returns at once; `result(id)` and
    `results()` wait."""

    def __init__(
        self,
        nodes: list[Node],
        execute: Callable[[Node], NodeResult],
        skip: Callable[[Node, str], NodeResult],
    ):
        self.nodes, self._execute, self._skip = nodes, execute, skip
        self._results: dict[str, NodeResult] = {}
        self._done = {n.id: threading.Event() for n in nodes}

    def start(self) -> Schedule:
        context = copy_context()  # the caller's context (Prefect's flow run) reaches the nodes
        for node in self.nodes:
            threading.Thread(
                target=context.copy().run, args=(self._run, node), name=node.id, daemon=True
            ).start()
        return self

    def result(self, node_id: str) -> NodeResult:
        self._done[node_id].wait()
        return self._results[node_id]

    def results(self) -> dict[str, NodeResult]:
        return {n.id: self.result(n.id) for n in self.nodes}

    def _run(self, node: Node) -> None:
        try:
            parents = [self.result(p.id) for p in node.parents.values()]
            bad = [p.node_id for p in parents if p.failed]
            if bad:
                self._results[node.id] = self._skip(node, f"upstream failed: {', '.join(bad)}")
            else:
                self._results[node.id] = self._execute(node)
        except BaseException as e:  # never leave a waiting child hanging
            self._results[node.id] = NodeResult(
                node.id, node.stage, node.fingerprint, "failed", error=f"{type(e).__name__}: {e}"
            )
        finally:
            self._done[node.id].set()
