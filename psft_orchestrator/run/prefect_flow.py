"""Prefect's view of a run: one flow run, one task run per node, progress and table artifacts.

Prefect observes; it does not dispatch. The nodes run on their own `Schedule` from the moment
Ray is up, and the flow run mirrors that schedule once Prefect's server is ready: the task run
of a node waits for the node's real result and ends in the matching state. So the temporary
server's start-up (seconds on 2 cores) is never on a node's critical path, and a server that
fails to start costs the run its Prefect record, not its results. A task run's start time is
when the mirror reached it: for the first nodes, after the node itself started.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from contextvars import copy_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import prefect_db, store
from .schedule import NodeResult, Schedule

if TYPE_CHECKING:
    from psft_orchestrator.plan.planner import Node

    from .execute import RunContext


def configure(ws: Path) -> None:
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
        and server_up(url_file.read_text().strip())
    ):
        os.environ["PREFECT_API_URL"] = url_file.read_text().strip()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def start_server(ws: Path) -> threading.Thread:
    """Start Prefect's temporary server in the background, unless a server is configured; join
    the thread before the flow run. It is a singleton: the flow run finds it started."""
    thread = threading.Thread(target=_start_server, args=(ws,), name="prefect-server", daemon=True)
    thread.start()
    return thread


def _start_server(ws: Path) -> None:
    try:
        configure(ws)
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return
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


def server_up(api_url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def mirror(ctx: RunContext, running: Schedule, server: threading.Thread) -> dict[str, NodeResult]:
    """Record the running schedule as a Prefect flow run; return the nodes' results. When
    Prefect fails, the run goes on unrecorded: its results never depend on Prefect."""
    server.join()
    try:
        _flow_run(ctx, running)
    except Exception as e:  # said in the terminal view: stderr goes to the run's log here
        ctx.view.line(f"warning: Prefect could not record this run ({type(e).__name__}: {e})")
    return running.results()


def _flow_run(ctx: RunContext, running: Schedule) -> None:
    configure(ctx.ws)
    from prefect import flow
    from prefect.states import Failed

    @flow(
        name=f"psft-{ctx.plan.pipeline.name}",
        flow_run_name=ctx.run_id,
        persist_result=False,
        log_prints=False,
    )
    def pipeline_flow() -> Any:
        def task_run(node: Node, why: str = "") -> NodeResult:
            return _task_run(ctx, node, running)

        results = Schedule(ctx.plan.nodes, task_run, task_run).start().results()
        publish(ctx, results)
        failed = [r.node_id for r in results.values() if r.status == "failed"]
        if failed:  # the flow run ends Failed, not Completed with a red task run
            return Failed(message=f"{len(failed)} node(s) failed: {', '.join(failed)}")
        return None

    pipeline_flow(return_state=True)


def _task_run(ctx: RunContext, node: Node, running: Schedule) -> NodeResult:
    """A task run that waits for the node's real result (publishing a training node's progress
    meanwhile) and ends in the state that result maps to."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    def body() -> Any:
        stop = threading.Event()
        if node.output_type == "model":
            threading.Thread(
                target=copy_context().run, args=(publish_progress, ctx, node, stop), daemon=True
            ).start()
        try:
            return _as_state(running.result(node.id))
        finally:
            stop.set()

    tags = [
        f"kind:{node.kind}",
        f"backend:{node.backend}",
        *(f"{k}:{v}" for k, v in node.labels.items() if k in ("method", "model")),
    ]
    task(body, name=node.id, tags=tags, cache_policy=NO_CACHE, persist_result=False)(
        return_state=True
    )
    return running.result(node.id)


def _as_state(result: NodeResult) -> Any:
    from prefect.states import Cancelled, Completed, Failed

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


def publish_progress(
    ctx: RunContext, node: Node, stop: threading.Event, every_s: float = 2.0
) -> None:
    """A Prefect progress artifact for a training node, fed by the trainer's progress.json."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    path = store.build_dir(ctx.ws, node.stage, node.fp16) / "progress.json"
    artifact_id, shown = None, -1.0
    while not stop.wait(every_s):
        info = store.read_json(path)
        if not info.get("total"):
            continue
        pct = round(100.0 * info["step"] / info["total"], 1)
        if artifact_id is None:
            artifact_id = create_progress_artifact(pct, description=f"{node.id}: optimizer steps")
        elif pct != shown:
            update_progress_artifact(artifact_id, pct)
        shown = pct


def publish(ctx: RunContext, results: dict[str, NodeResult]) -> None:
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
