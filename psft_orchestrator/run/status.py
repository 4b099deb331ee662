"""`psft-run status`: the current or last run of a workspace, from another terminal.

A running `psft-run` keeps `<workspace>/status.json` current (run.console); this reads it.
A file that says "running" whose process is gone belongs to a run that was killed.
Without that file (a run from before it existed) the newest run record is shown.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .console import duration_text, fmt, status_path


def load_status(ws: Path) -> dict[str, Any] | None:
    """The live status of the workspace's current or last run, or its newest run record."""
    path = status_path(ws)
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        status = None
    if status is not None:
        if status.get("state") == "running" and not pid_alive(int(status.get("pid", 0) or 0)):
            status["state"] = f"killed (process {status.get('pid')} is gone)"
        return status
    records = sorted((ws / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    for record_path in reversed(records):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        nodes = [{**n, "state": n.get("status", "?")} for n in record.get("nodes", [])]
        return {"run_id": record.get("run_id"), "state": record.get("status"), "nodes": nodes}
    return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (else the run that wrote "running" was killed)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render_status(status: dict[str, Any]) -> str:
    lines = [f"run {status.get('run_id')}: {status.get('state')}"]
    if status.get("started_at"):
        lines[0] += f", started {duration_text(time.time() - status['started_at'])} ago"
    if status.get("log"):
        lines.append(f"  run log: {status['log']}")
    nodes = status.get("nodes", [])
    width = max((len(n["node_id"]) for n in nodes), default=0)
    for n in nodes:
        lines.append(f"  {n['node_id'].ljust(width)}  {n['state']:8}  {_detail(n)}".rstrip())
    failed = [n for n in nodes if n["state"] == "failed"]
    for n in failed:
        lines.append(f"failed: {n['node_id']}: {n.get('error', '')}\n  log: {n.get('log', '')}")
    return "\n".join(lines)


def _detail(n: dict[str, Any]) -> str:
    if n["state"] == "running":
        parts = [f"{n['step']}/{n['total']}" if n.get("total") else f"{n['elapsed_s']:.0f}s"]
        if n.get("metric"):
            parts.append(f"{n['metric'][0]} {fmt(n['metric'][1])}")
        if n.get("tokens_per_s"):
            parts.append(f"{n['tokens_per_s']:,.0f} tok/s")
        if n.get("eta_s") is not None:
            parts.append(f"ETA {duration_text(n['eta_s'])}")
        return "  ".join(parts)
    if n["state"] in ("success", "failed"):
        return f"{n.get('duration_s', 0):.1f}s"
    return ""
