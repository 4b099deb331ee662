"""Execute a plan: one Ray task per node, mirrored as one Prefect flow run (`prefect_flow`).

Each node runs in its own thread (`schedule.Schedule`), which waits for its parents, then
submits a Ray task with the node's resources; the Ray task starts the backend worker as a
subprocess with the backend's interpreter (`python -m psft_orchestrator.backends.worker
job.json`). Ray decides what runs concurrently, so independent branches run at once up to the
cluster's resources.
The orchestrator process alone writes the DuckDB index, right after each node finishes.

Done nodes (`_SUCCESS` present) are never redone. When every node is done, neither Ray nor
Prefect is started: the run only prints its summary.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from pathlib import Path
from typing import Any

from psft_orchestrator import __version__
from psft_orchestrator.contract import (
    EXIT_DETERMINISTIC,
    InputRef,
    Job,
    Manifest,
    ParentRef,
)
from psft_orchestrator.envs import backend_python
from psft_orchestrator.plan.fingerprint import backend_version
from psft_orchestrator.plan.planner import Node, Plan
from psft_orchestrator.spec.errors import SpecError

from . import cluster, prefect_flow, store
from .console import RunView, chatter_to, print_summary
from .faults import kill_point
from .inputs import MissingInput, materialize_prepared, materialize_toy, resolve_hub
from .lock import WorkspaceBusy, workspace_lock
from .schedule import NodeResult, Schedule
from .shared_store import SharedStore

# Extra attempts after a failure that may not happen again: the worker exited with anything but
# EXIT_DETERMINISTIC, or Ray lost the worker (node died, OOM-killed, signal).
RETRIES = 1


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
    plan, ws, quiet = ctx.plan, ctx.ws, ctx.quiet
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
        results = _run_nodes(ctx, todo, ray_address, use_prefect)
    record = _write_run_record(ctx, results, started)
    kill_point("end")
    _ingest_run_record(ws, record, plan)
    print_summary(results, time.time() - started, quiet)
    _print_tables(plan, ws, quiet, ctx.run_id)
    _print_claims(plan, ws, quiet, ctx.run_id)
    return all(r.status in ("success", "cached") for r in results.values())


def _run_nodes(
    ctx: RunContext, todo: list[Node], ray_address: str | None, use_prefect: bool
) -> dict[str, NodeResult]:
    """Start up, run the schedule, and (with Prefect) mirror it as a flow run."""
    # Prefect, Ray, tqdm and transformers print to the run's log; the view to the terminal.
    log = ctx.ws / "runs" / f"{ctx.run_id}.log"
    with (
        chatter_to(log) as out,
        _started(ctx, ray_address, todo, log),
        RunView(ctx.ws, ctx.run_id, out, ctx.quiet, pending=[n.id for n in todo]) as view,
    ):
        ctx.view = view
        # Prefect's temporary server starts once the nodes are running, beside them: it takes
        # seconds of CPU that Ray's start-up would otherwise share on a small machine.
        running = Schedule(ctx.plan.nodes, ctx.execute, ctx.skip).start()
        if not use_prefect:
            return running.results()
        return prefect_flow.mirror(ctx, running, prefect_flow.start_server(ctx.ws))


@contextlib.contextmanager
def _started(ctx: RunContext, address: str | None, todo: list[Node], log: Path) -> Iterator[None]:
    """Start-up, held for the run: join or start Ray, and build the inputs meanwhile.

    Ray's start mostly waits on its subprocesses, so the inputs (toy models need torch and
    transformers unless the machine's cache has them) are built in a thread meanwhile:
    start-up is the longer of the two, not their sum. Ray stays in the main thread (it
    installs signal handlers there). Once Ray is up, and before any node runs, a node no Ray
    node can hold and a Ray node that does not see the workspace stop the run (SpecError,
    exit 2; `_check_cluster`).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="start-up") as pool:
        inputs = pool.submit(copy_context().run, _materialize_inputs, ctx.plan, todo)
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
        summary = store.read_json(d / "summary.json")
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
            self.shared.publish(
                node.fingerprint, node.artifact_dir(self.ws), replace=node.id in self.forced
            )
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
            err = store.read_json(failed / "error.json")
            what = infra_error or (
                f"{err['type']}: {err['message']}" if err else f"worker exited with status {rc}"
            )
            tail = _tail(flog, 15)
            # The worker's exit code decides; a lost Ray worker (no exit code) may not recur.
            retry = infra_error is not None or rc != EXIT_DETERMINISTIC
            raise NodeFailed(f"{what}\n--- last lines of {flog} ---\n{tail}", str(flog), retry)
        kill_point("trained", node.id)
        summary = store.read_json(tmp / "summary.json")
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


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
