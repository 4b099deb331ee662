"""Execute a plan: one Prefect flow run, one Prefect task run per node, one Ray task per node.

Each node runs in its own thread, which waits for its parents, then submits a Ray task with
the node's resources; the Ray task starts the backend worker as a subprocess with the
backend's interpreter (`python -m psft_orchestrator.backends.worker job.json`). Ray decides
what runs concurrently, so independent branches run at once up to the cluster's resources.
The orchestrator process alone writes the DuckDB index, right after each node finishes.

Done nodes (`_SUCCESS` present) are never redone. When every node is done, neither Ray nor
Prefect is started: the run only prints its summary.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psft_orchestrator import __version__
from psft_orchestrator.contract import (
    EXIT_DETERMINISTIC,
    InputRef,
    Job,
    Manifest,
    NodeStatus,
    ParentRef,
)
from psft_orchestrator.envs import backend_python
from psft_orchestrator.plan.fingerprint import backend_version
from psft_orchestrator.plan.planner import Node, Plan
from psft_orchestrator.spec.errors import SpecError

from . import cluster, prefect_db, store
from .console import RunView, chatter_to, print_summary
from .faults import kill_point
from .inputs import MissingInput, materialize_prepared, materialize_toy, resolve_hub
from .lock import WorkspaceBusy, workspace_lock
from .shared_store import SharedStore

# Extra attempts after a failure that may not happen again: the worker exited with anything but
# EXIT_DETERMINISTIC, or Ray lost the worker (node died, OOM-killed, signal).
RETRIES = 1


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


class NodeFailed(Exception):
    pass


# ---------------------------------------------------------------- entry point


def run_plan(
    plan: Plan,
    force: list[str] | None = None,
    wait: bool = True,
    ray_address: str | None = None,
    use_prefect: bool = True,
    quiet: bool = False,
    max_parallel: int | None = None,
    shared: SharedStore | None = None,
) -> bool:
    """Run every node that is not done; return True when no node failed.

    At most `max_parallel` nodes run at once (default: the spec's `max_parallel:`, else the
    CPUs this process may use), whatever Ray would admit. With a `shared` store, a node found
    there is linked into the workspace instead of computed, and a node computed is published.
    """
    ws = plan.workspace.resolve()
    forced = plan.forced(force or [])
    slots = max_parallel or plan.pipeline.max_parallel or cluster.usable_cpus()
    try:
        with workspace_lock(ws, wait=wait):
            ctx = RunContext(plan, ws, _run_id(plan), quiet, slots, shared)
            return _run_locked(ctx, forced, ray_address, use_prefect)
    except WorkspaceBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return False


def _run_id(plan: Plan) -> str:
    return f"{plan.pipeline.name}-{plan.plan_hash[:8]}-{time.strftime('%Y%m%dT%H%M%S')}"


def _run_locked(
    ctx: RunContext, forced: set[str], ray_address: str | None, use_prefect: bool
) -> bool:
    started = time.time()
    plan, ws, run_id, quiet = ctx.plan, ctx.ws, ctx.run_id, ctx.quiet
    store.clean_stale_tmp(ws)
    ctx.forced = forced
    kill_point("start")
    for node in plan.nodes:
        if node.id in forced:
            store.retire(node.artifact_dir(ws))
        elif node.is_done(ws):  # a run killed between committing a node and cleaning up after it
            _remove_tree(store.checkpoint_dir(ws, node.stage, node.fp16))
    if ctx.shared is not None:
        ctx.shared.register(ws)
    # Nodes in the shared store are linked in first: if that is all, neither Ray nor Prefect.
    todo = [n for n in plan.nodes if not n.is_done(ws) and not ctx.reuse(n)]
    if not todo:
        results = {n.id: ctx.cached(n) for n in plan.nodes}
    else:
        # Prefect, Ray, tqdm and transformers print to the run's log; the view to the terminal.
        log = ws / "runs" / f"{run_id}.log"
        with (
            chatter_to(log) as out,
            _started(ctx, ray_address, todo, log, use_prefect),
            RunView(ws, run_id, out, quiet, pending=[n.id for n in todo]) as view,
        ):
            ctx.view = view
            results = _run_prefect(ctx) if use_prefect else _schedule(ctx, ctx.execute)
    record = _write_run_record(ctx, results, started)
    kill_point("end")
    _ingest_run_record(ws, record, plan)
    print_summary(results, time.time() - started, quiet)
    _print_tables(plan, ws, quiet, ctx.run_id)
    _print_claims(plan, ws, quiet, ctx.run_id)
    return all(r.status in ("success", "cached") for r in results.values())


@contextlib.contextmanager
def _started(
    ctx: RunContext, address: str | None, todo: list[Node], log: Path, use_prefect: bool
) -> Iterator[None]:
    """Start-up, held for the run: join or start Ray, build the inputs, start Prefect's server.

    Ray's start and Prefect's temporary server mostly wait on their subprocesses, so the inputs
    (torch and transformers imports) are built in a thread meanwhile, and Prefect's server
    starts in another: start-up is the longest of the three, not their sum. Ray stays in the
    main thread (it installs signal handlers there). Once Ray is up, and before any node runs,
    a node no Ray node can hold and a Ray node that does not see the workspace stop the run
    (SpecError, exit 2; `_check_cluster`).
    """
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="start-up") as pool:
        inputs = pool.submit(copy_context().run, _materialize_inputs, ctx.plan, todo)
        if use_prefect:
            pool.submit(_start_prefect_server, ctx.ws)
        ray_started = _start_ray(address)
        try:
            _check_cluster(ctx, todo, log)
            inputs.result()
        except BaseException:
            _stop_ray(ray_started)
            raise
    try:
        yield
    finally:
        _stop_ray(ray_started)


def _check_cluster(ctx: RunContext, todo: list[Node], log: Path) -> None:
    """Placement and workspace probe (`run.cluster`); a refused run leaves no run log behind
    (it held only Ray's start-up lines)."""
    try:
        ctx.cluster = cluster.alive_nodes()
        cluster.check_placement(todo, ctx.cluster)
        cluster.probe_workspace(ctx.ws, ctx.cluster)
    except SpecError:
        log.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            log.parent.rmdir()  # runs/ of a fresh workspace
        raise


def _stop_ray(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def _start_ray(address: str | None) -> bool:
    return cluster.connect(address)


def _materialize_inputs(plan: Plan, todo: list[Node]) -> None:
    """Build the toy-world and prepared hub inputs that the nodes to run consume."""
    needed = {r.name for n in todo for r in _flat_inputs(n) if r.name in plan.toy_inputs}
    materialize_toy(plan, needed)
    hub = {r.name for n in todo for r in _flat_inputs(n) if r.name in plan.prepared_inputs}
    materialize_prepared(plan, hub)


def _flat_inputs(node: Node) -> list[InputRef]:
    return [r for v in node.inputs.values() for r in (v if isinstance(v, list) else [v])]


# ---------------------------------------------------------------- scheduling


def _schedule(
    ctx: RunContext,
    execute: Callable[[Node], NodeResult],
    skip: Callable[[Node, str], NodeResult] | None = None,
) -> dict[str, NodeResult]:
    """A thread per node: wait for its parents, then run it (or skip it if a parent failed)."""
    results: dict[str, NodeResult] = {}
    done = {n.id: threading.Event() for n in ctx.plan.nodes}
    context = copy_context()  # Prefect's flow-run context must reach the node threads

    def worker(node: Node) -> None:
        try:
            for parent in node.parents.values():
                done[parent.id].wait()
            bad = [
                p.id
                for p in node.parents.values()
                if results[p.id].status in ("failed", "upstream_failed")
            ]
            if bad:
                results[node.id] = (skip or ctx.skip)(node, f"upstream failed: {', '.join(bad)}")
            else:
                results[node.id] = execute(node)
        except BaseException as e:  # never leave a waiting child hanging
            results[node.id] = NodeResult(
                node.id, node.stage, node.fingerprint, "failed", error=f"{type(e).__name__}: {e}"
            )
        finally:
            done[node.id].set()

    threads = [
        threading.Thread(target=context.copy().run, args=(worker, n), name=n.id, daemon=True)
        for n in ctx.plan.nodes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {n.id: results[n.id] for n in ctx.plan.nodes}


def _run_prefect(ctx: RunContext) -> dict[str, NodeResult]:
    """The same schedule inside one Prefect flow run, each node a Prefect task run."""
    configure_prefect(ctx.ws)
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.states import Cancelled, Completed, Failed

    def as_state(result: NodeResult):
        if result.status == "cached":
            return Completed(
                name="Cached", message=f"done before: {result.fingerprint[:16]}", data=None
            )
        if result.status == "success":
            return Completed(message=json.dumps(result.summary)[:500], data=None)
        if result.status == "upstream_failed":
            return Cancelled(name="UpstreamFailed", message=result.error)
        from prefect import get_run_logger

        # Logged lines render as lines in the UI; a state message is shown as one string.
        get_run_logger().error(f"{result.error}\nlog: {result.log}")
        return Failed(message=result.error.splitlines()[0] if result.error else "failed")

    def node_task(node: Node, run: Callable[[], NodeResult] | None = None) -> NodeResult:
        holder: dict[str, NodeResult] = {}

        def body() -> Any:
            stop = threading.Event()
            if run is None and node.output_type == "model":
                watcher = threading.Thread(
                    target=copy_context().run,
                    args=(_publish_progress, ctx, node, stop),
                    daemon=True,
                )
                watcher.start()
            try:
                holder["r"] = run() if run else ctx.execute(node)
            finally:
                stop.set()
            return as_state(holder["r"])

        tags = [
            f"kind:{node.kind}",
            f"backend:{node.backend}",
            *(f"{k}:{v}" for k, v in node.labels.items() if k in ("method", "model")),
        ]
        task(body, name=node.id, tags=tags, cache_policy=NO_CACHE, persist_result=False)(
            return_state=True
        )
        return holder["r"]

    @flow(
        name=f"psft-{ctx.plan.pipeline.name}",
        flow_run_name=ctx.run_id,
        persist_result=False,
        log_prints=False,
    )
    def pipeline_flow() -> Any:
        results = _schedule(
            ctx, node_task, lambda node, why: node_task(node, lambda: ctx.skip(node, why))
        )
        holder["results"] = results
        _publish(ctx, results)
        failed = [r.node_id for r in results.values() if r.status == "failed"]
        if failed:  # the flow run ends Failed, not Completed with a red task run
            return Failed(message=f"{len(failed)} node(s) failed: {', '.join(failed)}")
        return None

    holder: dict[str, dict[str, NodeResult]] = {}
    pipeline_flow(return_state=True)
    return holder["results"]


def _publish_progress(
    ctx: RunContext, node: Node, stop: threading.Event, every_s: float = 2.0
) -> None:
    """A Prefect progress artifact for a training node, fed by the trainer's progress.json."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    path = store.build_dir(ctx.ws, node.stage, node.fp16) / "progress.json"
    artifact_id, shown = None, -1.0
    while not stop.wait(every_s):
        info = _read_json(path)
        if not info.get("total"):
            continue
        pct = round(100.0 * info["step"] / info["total"], 1)
        if artifact_id is None:
            artifact_id = create_progress_artifact(pct, description=f"{node.id}: optimizer steps")
        elif pct != shown:
            update_progress_artifact(artifact_id, pct)
        shown = pct


def configure_prefect(ws: Path) -> None:
    """Defaults for Prefect, set before it is imported: the workspace's own Prefect home (its
    SQLite database), and patience for the temporary server on a loaded 2-core machine. With
    PREFECT_API_URL set (see `make ui`), runs go to that server instead."""
    os.environ.setdefault("PREFECT_HOME", str(ws / ".prefect"))
    # Prefect looks for its memo store under ~/.prefect whatever PREFECT_HOME says; without one
    # it warns and re-registers every block type at each server start (seconds, every run).
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_MEMO_STORE_PATH", str(home / "memo_store.toml"))
    url_file = ws / ".prefect" / "api_url"  # written by `make ui` (scripts/prefect_ui.sh)
    if (
        "PREFECT_API_URL" not in os.environ
        and url_file.exists()
        and _server_up(url_file.read_text().strip())
    ):
        os.environ["PREFECT_API_URL"] = url_file.read_text().strip()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _start_prefect_server(ws: Path) -> None:
    """Start Prefect's temporary server now, unless a server is configured. It is a singleton:
    the flow run finds it started. A failure here is left for the flow run to report."""
    try:
        configure_prefect(ws)
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            from prefect.server.api.server import SubprocessASGIServer

            home = Path(os.environ["PREFECT_HOME"])
            new_database = False  # Prefect will create and migrate it
            if prefect_db.default_database(home):
                prefect_db.seed(home)
                new_database = not prefect_db.exists(home)
            SubprocessASGIServer().start()
            if new_database:  # migrated by this start, and no flow run in it yet
                prefect_db.save_template(home)
    except Exception as e:  # the flow run starts it again and fails there with the real error
        print(f"Prefect server pre-start failed: {e}", file=sys.stderr)


def _server_up(api_url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _publish(ctx: RunContext, results: dict[str, NodeResult]) -> None:
    """Prefect artifacts: the run summary and the spec's result tables."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [
        {
            "node": r.node_id,
            "status": r.status,
            "seconds": round(r.duration_s, 1),
            **{k: v for k, v in r.summary.items() if isinstance(v, int | float)},
        }
        for r in results.values()
    ]
    create_table_artifact(rows, key="run-summary", description=f"{ctx.run_id}: node status")
    try:
        from psft_orchestrator.results.tables import publish_tables

        for name, markdown in publish_tables(ctx.ws, ctx.plan.pipeline.name, ctx.run_id):
            create_markdown_artifact(
                markdown, key=f"table-{name}".lower().replace("_", "-"), description=name
            )
    except Exception as e:
        print(f"note: could not publish result tables: {e}", file=sys.stderr)


# ---------------------------------------------------------------- one node


class RunContext:
    def __init__(
        self,
        plan: Plan,
        ws: Path,
        run_id: str,
        quiet: bool,
        slots: int = 1,
        shared: SharedStore | None = None,
    ):
        self.plan, self.ws, self.run_id, self.quiet = plan, ws, run_id, quiet
        self.shared = shared
        self.reused: set[str] = set()  # node ids linked from the shared store in this run
        self.forced: set[str] = set()  # node ids --force recomputes (never taken from the store)
        self.slots = threading.BoundedSemaphore(slots)  # nodes running at once
        self.view = RunView(ws, run_id, sys.stdout, quiet, live=False)  # replaced while running
        self.cluster: list[cluster.ClusterNode] = []  # alive Ray nodes, once connected
        self._index_lock = threading.Lock()
        self._fp_locks: dict[str, threading.Lock] = {}

    def cached(self, node: Node) -> NodeResult:
        d = node.artifact_dir(self.ws)
        summary = _read_json(d / "summary.json")
        return NodeResult(
            node.id,
            node.stage,
            node.fingerprint,
            "cached",
            summary=summary,
            log=str(d / "logs" / "stage.log"),
            reused=node.id in self.reused,
        )

    def skip(self, node: Node, why: str) -> NodeResult:
        result = NodeResult(node.id, node.stage, node.fingerprint, "upstream_failed", error=why)
        self.view.node_finished(result)
        return result

    def execute(self, node: Node) -> NodeResult:
        # Two nodes of one plan can share a fingerprint (same config and inputs, e.g. two model
        # names that a toy profile maps to one model): the first computes, the other reuses it.
        with self._fp_locks.setdefault(node.fingerprint, threading.Lock()), self.slots:
            return self._execute(node)

    def _execute(self, node: Node) -> NodeResult:
        if node.is_done(self.ws):  # done by an earlier or a concurrent run
            return self.cached(node)
        if self.shared is None:
            return self._compute(node)
        # One run per fingerprint computes; the others wait for its entry (or its stale claim).
        with self.shared.claimed(node.fingerprint, self.run_id) as ours:
            if not ours and self.reuse(node):
                result = self.cached(node)
                self.view.node_finished(result)
                return result
            result = self._compute(node)
            if result.status == "success":
                self._publish(node)
            return result

    def reuse(self, node: Node) -> bool:
        """Link the node's store entry, if there is one, into the workspace with this
        workspace's manifest (node id, labels, inputs and run of this plan; what was computed
        where and when from the store) and index it. False when there is none (or it is
        unusable: then the node is computed)."""
        if self.shared is None or node.id in self.forced or not self.shared.has(node.fingerprint):
            return False
        tmp = store.build_dir(self.ws, node.stage, node.fp16)
        try:
            _remove_tree(tmp)
            self.shared.materialize(node.fingerprint, tmp)
            stored = Manifest.model_validate(self.shared.stored_manifest(node.fingerprint))
            update = self._identity(node, self._job(node, tmp))
            update["reused_from"] = str(self.shared.entry(node.fingerprint))
            manifest = stored.model_copy(update=update).model_dump(mode="json")
        except (OSError, ValueError, MissingInput) as e:  # ValidationError is a ValueError
            print(f"warning: store entry of {node.id} unusable, computing it: {e}", file=sys.stderr)
            _remove_tree(tmp)
            return False
        store.finalize(tmp, node.artifact_dir(self.ws), manifest)
        self._ingest(node)
        self.reused.add(node.id)
        return True

    def _publish(self, node: Node) -> None:
        assert self.shared is not None
        try:
            self.shared.publish(node.fingerprint, node.artifact_dir(self.ws))
        except OSError as e:
            print(f"warning: could not publish {node.id} to the store: {e}", file=sys.stderr)

    def _compute(self, node: Node) -> NodeResult:
        start = time.time()
        attempts, error, log = 0, "", ""
        while attempts <= RETRIES:
            attempts += 1
            self.view.node_started(
                node.id,
                f"{node.kind}/{node.backend}",
                store.build_dir(self.ws, node.stage, node.fp16),
                attempts,
            )
            try:
                summary = self._attempt(node, attempts, start)
                self._ingest(node)
                result = NodeResult(
                    node.id,
                    node.stage,
                    node.fingerprint,
                    "success",
                    time.time() - start,
                    summary.get("backend_seconds"),
                    summary=summary,
                    attempts=attempts,
                    log=str(node.artifact_dir(self.ws) / "logs" / "stage.log"),
                )
                self.view.node_finished(result)
                return result
            except NodeFailed as e:
                error, log, retry = e.args
                if not retry:
                    break
        result = NodeResult(
            node.id,
            node.stage,
            node.fingerprint,
            "failed",
            time.time() - start,
            error=error,
            log=log,
            attempts=attempts,
        )
        self.view.node_finished(result)
        return result

    def _attempt(self, node: Node, attempt: int, started: float) -> dict[str, Any]:
        fp16 = node.fp16
        tmp = store.tmp_dir(self.ws, node.stage, fp16)
        log_path = tmp / "logs" / "stage.log"
        try:
            job = self._job(node, tmp)
        except MissingInput as e:
            failed = store.keep_failed(self.ws, tmp, node.stage, fp16)
            raise NodeFailed(str(e), str(failed / "logs" / "stage.log"), False) from None
        job_path = tmp / "job.json"
        job.save(job_path)
        python = backend_python(self.plan.pipeline.interpreters, node.backend)
        cmd = [python, "-m", "psft_orchestrator.backends.worker", str(job_path)]
        options = cluster.ray_options(node.stage_model.resources, cluster.run_gpus(node))
        t0 = store.now_iso()
        rc, infra_error, where = _run_in_ray(cmd, log_path, options)
        if rc != 0:
            failed = store.keep_failed(self.ws, tmp, node.stage, fp16)
            flog = failed / "logs" / "stage.log"
            err = _read_json(failed / "error.json")
            what = infra_error or (
                f"{err['type']}: {err['message']}" if err else f"worker exited with status {rc}"
            )
            tail = _tail(flog, 15)
            # The worker's exit code decides; a lost Ray worker (no exit code) may not recur.
            retry = infra_error is not None or rc != EXIT_DETERMINISTIC
            raise NodeFailed(f"{what}\n--- last lines of {flog} ---\n{tail}", str(flog), retry)
        kill_point("trained", node.id)
        summary = _read_json(tmp / "summary.json")
        manifest = self._manifest(node, job, python, t0, started, attempt, where)
        store.finalize(tmp, node.artifact_dir(self.ws), manifest.model_dump(mode="json"))
        kill_point("moved", node.id)
        _remove_tree(Path(job.checkpoint_dir))
        return summary

    def _manifest(
        self,
        node: Node,
        job: Job,
        python: str,
        t0: str,
        started: float,
        attempt: int,
        where: dict[str, Any],
    ) -> Manifest:
        ray_node = where.get("ray_node_id", "")
        types = {n.node_id: n.accelerator_type for n in self.cluster}
        return Manifest(
            **self._identity(node, job),
            kind=node.kind,
            backend=node.backend,
            fingerprint=node.fingerprint,
            output_type=node.output_type,
            versions={
                "psft_orchestrator": __version__,
                "python": sys.version.split()[0],
                "backend": node.backend_version or backend_version(node.backend),
                "interpreter": python,
            },
            host=where.get("host") or store.host(),
            ray_node_id=ray_node,
            accelerators=where.get("accelerators", {}),
            accelerator_type=types.get(ray_node, ""),
            started_at=t0,
            ended_at=store.now_iso(),
            duration_s=round(time.time() - started, 3),
            status="success",
            attempt=attempt,
        )

    def _identity(self, node: Node, job: Job) -> dict[str, Any]:
        """Manifest fields that say which node of which plan and run this is (the rest says
        what was computed, where and when: the same for every node of one fingerprint)."""
        return dict(
            node_id=node.id,
            stage=node.stage,
            run_id=self.run_id,
            spec_name=self.plan.pipeline.name,
            spec_path=str(self.plan.spec_path),
            labels=node.labels,
            config=job.config_data(),
            parents=[
                ParentRef(slot=s, node_id=p.id, fingerprint=p.fingerprint)
                for s, p in node.parents.items()
            ],
            inputs=job.inputs,
            input_hashes=node.input_hashes,
        )

    def _job(self, node: Node, tmp: Path) -> Job:
        inputs: dict[str, InputRef | list[InputRef]] = {}
        for slot, ref in node.inputs.items():
            if slot in node.parents:
                parent = node.parents[slot]
                inputs[slot] = InputRef(
                    type=parent.output_type, path=str(parent.output_path(self.ws)), name=parent.id
                )
            elif isinstance(ref, list):
                inputs[slot] = [resolve_hub(r) for r in ref]
            else:
                inputs[slot] = resolve_hub(ref)
        ckpt = store.checkpoint_dir(self.ws, node.stage, node.fp16)
        return Job(
            node_id=node.id,
            stage=node.stage,
            kind=node.kind,
            backend=node.backend,
            fingerprint=node.fingerprint,
            config=node.config,
            inputs=inputs,
            labels=node.labels,
            node_dir=str(tmp),
            checkpoint_dir=str(ckpt),
            output_type=node.output_type,
        )

    def _ingest(self, node: Node) -> None:
        try:
            from psft_orchestrator.results.ingest import ingest_node
            from psft_orchestrator.results.store import writer

            with self._index_lock, writer(self.ws) as con:
                kill_point("indexing", node.id)
                ingest_node(con, node.artifact_dir(self.ws))
                kill_point("indexed", node.id)
        except Exception as e:
            print(
                f"warning: could not index {node.id}: {e} (run `psft-results reindex`)",
                file=sys.stderr,
            )


# ---------------------------------------------------------------- Ray


_REMOTE = None


def _run_in_ray(
    cmd: list[str], log_path: Path, options: dict[str, Any]
) -> tuple[int, str | None, dict[str, Any]]:
    """Run the worker command inside a Ray task with the node's resources (`options`);
    returns (exit code, infra error, where it ran: `cluster.placement()`)."""
    import ray

    global _REMOTE
    if _REMOTE is None:
        _REMOTE = ray.remote(max_retries=0)(_run_subprocess)
    try:
        rc, where = ray.get(_REMOTE.options(**options).remote(cmd, str(log_path)))
        return rc, None, where
    except ray.exceptions.RayError as e:
        return -1, f"Ray failure ({type(e).__name__}): {str(e)[:300]}", {}


def _run_subprocess(cmd: list[str], log_path: str) -> tuple[int, dict[str, Any]]:
    """Body of the Ray task: run the worker, output to the node's log; it dies with us."""
    where = cluster.placement()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        return proc.wait(), where


def _die_with_parent() -> None:
    """Linux: SIGKILL the worker if the Ray task that started it dies (no orphan training jobs)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# ---------------------------------------------------------------- records and output


def _write_run_record(
    ctx: RunContext, results: dict[str, NodeResult], started: float
) -> dict[str, Any]:
    status = (
        "success" if all(r.status in ("success", "cached") for r in results.values()) else "failed"
    )
    record = {
        "run_id": ctx.run_id,
        "spec_name": ctx.plan.pipeline.name,
        "spec_path": str(ctx.plan.spec_path),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
        "ended_at": store.now_iso(),
        "status": status,
        "nodes": [
            {
                "node_id": r.node_id,
                "stage": r.stage,
                "fingerprint": r.fingerprint,
                "status": r.status,
                "cached": r.status == "cached",
                "duration_s": round(r.duration_s, 3),
                "error": r.error[:2000],
                "log": r.log,
            }
            for r in results.values()
        ],
    }
    store.write_json_atomic(ctx.ws / "runs" / f"{ctx.run_id}.json", record)
    return record


def _ingest_run_record(ws: Path, record: dict[str, Any], plan: Plan) -> None:
    try:
        from psft_orchestrator.results.ingest import ingest_run_record
        from psft_orchestrator.results.store import writer

        path = ws / "runs" / f"{record['run_id']}.json"
        with writer(ws) as con:
            _index_missing(con, ws, plan, path)
            ingest_run_record(con, path)
    except Exception as e:
        print(f"warning: could not index the run record: {e}", file=sys.stderr)


def _index_missing(con: Any, ws: Path, plan: Plan, current: Path) -> None:
    """Index what a killed run committed but did not index: finished nodes of this plan and
    run records. Afterwards the index holds what `psft-results reindex` would build."""
    from psft_orchestrator.results.ingest import ingest_nodes, ingest_run_record

    indexed = {fp for (fp,) in con.execute("SELECT fingerprint FROM nodes").fetchall()}
    missing = [
        n.artifact_dir(ws) for n in plan.nodes if n.fingerprint not in indexed and n.is_done(ws)
    ]
    if missing:
        ingest_nodes(con, missing)
    runs = {r for (r,) in con.execute("SELECT run_id FROM runs").fetchall()}
    for path in sorted((ws / "runs").glob("*.json")):
        if path.stem not in runs and path != current:
            ingest_run_record(con, path)


def _print_tables(plan: Plan, ws: Path, quiet: bool, run_id: str) -> None:
    """Print the spec's `tables:` from the index (what `psft-results table NAME` prints)."""
    if quiet or not plan.pipeline.tables:
        return
    try:
        from psft_orchestrator.results.render import render
        from psft_orchestrator.results.store import reader
        from psft_orchestrator.results.tables import compute_table, get_definition, tables_dirs

        with reader(ws) as con:
            for name in plan.pipeline.tables:
                tdef = get_definition(name, tables_dirs(ws))
                grid = compute_table(con, tdef, spec=plan.pipeline.name, run=run_id)
                print(f"\n{name}\n{render(grid, 'markdown')}")
    except Exception as e:
        print(
            f"note: tables not printed ({e}); try `psft-results table NAME --workspace {ws}`",
            file=sys.stderr,
        )


def _print_claims(plan: Plan, ws: Path, quiet: bool, run_id: str) -> None:
    """With `claims: true`, the paper's claims checked on this run (`psft-results claims`)."""
    if quiet or not plan.pipeline.claims:
        return
    try:
        from psft_orchestrator.results.claims import check_claims, render_claims
        from psft_orchestrator.results.store import reader

        with reader(ws) as con:
            print(f"\nclaims (run {run_id})\n{render_claims(check_claims(con, run_id))}")
    except Exception as e:
        print(
            f"note: claims not printed ({e}); try `psft-results --workspace {ws} claims`",
            file=sys.stderr,
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
