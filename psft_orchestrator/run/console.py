"""What the terminal shows while a run executes, fed by events from the run layer.

On a terminal (TTY) a rich live view keeps one row per running node — a progress bar
(step/total), the latest loss or reward, tokens/s and the ETA — and prints one line above it
for each node that finishes, with its time and key metric. Anywhere else (CI, `| tee`) the same
events are plain lines, each written whole under a lock, so two nodes never interleave; progress
shows as a line each time a node passes a quarter of its steps.

Progress comes from the files a backend writes into the node's build directory:
`progress.json` (`{"step", "total"}`) and the last row of `metrics.jsonl`. The same state is
written to `<workspace>/status.json` about once a second, for `psft-run status` in
another terminal.

Everything else the orchestrator process prints (Prefect, Ray, tqdm bars, transformers
warnings) goes to the run's log file (`chatter_to`), not the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

KEY_METRICS = (
    "loss",
    "final_loss",
    "entropy",
    "final_entropy",
    "tokens_per_s",
    "kept",
    "score",
    "reward_mean",
)
# What a progress row shows as "the latest loss or reward", first match wins.
LIVE_METRICS = ("loss", "reward_mean", "reward", "score")
REFRESH_S = 1.0


def status_path(ws: Path) -> Path:
    """The live status of the workspace's current (or last) run. Not under runs/: every JSON
    file there is a run record."""
    return Path(ws) / "status.json"


@dataclass
class Running:
    """One running node as the view sees it."""

    node_id: str
    what: str  # "psft/native"
    build_dir: Path | None
    started: float = field(default_factory=time.time)
    attempt: int = 1
    step: int = 0
    total: int = 0
    metric: tuple[str, float] | None = None
    tokens_per_s: float | None = None
    first_seen: tuple[float, int] | None = None  # (time, step) of the first progress we read
    quarter: int = 0  # quarters of the steps already announced in plain mode

    def poll(self) -> None:
        """Read the build directory's progress.json and the last metrics row."""
        if self.build_dir is None:
            return
        info = read_json(self.build_dir / "progress.json")
        if info.get("total"):
            self.step, self.total = int(info["step"]), int(info["total"])
            if self.first_seen is None:
                self.first_seen = (time.time(), self.step)
        row = last_json_line(self.build_dir / "metrics.jsonl")
        key = next((k for k in LIVE_METRICS if isinstance(row.get(k), int | float)), None)
        if key:
            self.metric = (key, float(row[key]))
        self.tokens_per_s = _tokens_per_s(row)

    def eta_s(self) -> float | None:
        """Remaining seconds at the step rate seen since the view first read progress."""
        if not self.first_seen or not self.total:
            return None
        t0, s0 = self.first_seen
        done = self.step - s0
        if done <= 0:
            return None
        return (time.time() - t0) / done * (self.total - self.step)

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "state": "running",
            "what": self.what,
            "attempt": self.attempt,
            "step": self.step,
            "total": self.total,
            "metric": list(self.metric) if self.metric else None,
            "tokens_per_s": self.tokens_per_s,
            "eta_s": self.eta_s(),
            "elapsed_s": round(time.time() - self.started, 1),
            "log": str(self.build_dir / "logs" / "stage.log") if self.build_dir else "",
        }


def _tokens_per_s(row: dict[str, Any]) -> float | None:
    if isinstance(row.get("tokens_per_s"), int | float):
        return float(row["tokens_per_s"])
    if isinstance(row.get("tokens"), int | float) and row.get("elapsed_s"):
        return float(row["tokens"]) / float(row["elapsed_s"])
    return None


class RunView:
    """Receives node events, draws them, and keeps `<workspace>/status.json` current."""

    def __init__(
        self,
        ws: Path,
        run_id: str,
        out: IO[str],
        quiet: bool = False,
        live: bool | None = None,
        pending: list[str] | None = None,
    ):
        self.ws, self.run_id, self.out, self.quiet = ws, run_id, out, quiet
        self.pending = list(pending or [])  # node ids to run, for the status file
        self.live = (not quiet and out.isatty()) if live is None else live
        self.lock = threading.Lock()
        self.running: dict[str, Running] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        self.first_node_at: float | None = None  # start-up ends here (benchmarks/orchestration.py)
        self.log_path = ws / "runs" / f"{run_id}.log"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None
        self._console: Any = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> RunView:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.out, force_terminal=True)
            self._live = Live(
                get_renderable=self._table,
                console=self._console,
                refresh_per_second=2,
                redirect_stdout=False,
                redirect_stderr=False,
                transient=True,
            )
            self._live.start()
        self.line(f"run {self.run_id}; log {self.log_path}")
        self._thread = threading.Thread(target=self._tick, name="run-view", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._live is not None:
            self._live.stop()
        self.write_status("finished" if exc_type is None else f"stopped ({exc_type.__name__})")

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH_S):
            with self.lock:
                nodes = list(self.running.values())
            for r in nodes:
                r.poll()
                if not self.live:
                    self._plain_progress(r)
            self.write_status()

    # ------------------------------------------------------------ events

    def node_started(self, node_id: str, what: str, build_dir: Path | None, attempt: int) -> None:
        with self.lock:
            self.first_node_at = self.first_node_at or time.time()
            self.running[node_id] = Running(node_id, what, build_dir, attempt=attempt)
        retry = f" retry (attempt {attempt})" if attempt > 1 else ""
        if not self.live:
            self.line(f"[run ] {node_id} ({what}){retry}")

    def node_finished(self, result: Any) -> None:
        """A NodeResult: success, cached, failed or upstream_failed (contract.NODE_STATUSES)."""
        with self.lock:
            running = self.running.pop(result.node_id, None)
            self.finished[result.node_id] = finished_record(result)
        if result.status == "success":
            self.line(f"[done] {result.node_id} in {result.duration_s:.1f}s{metric_text(result)}")
        elif result.status == "failed":
            self.line(failure_text(result))
        elif result.status == "upstream_failed":
            self.line(f"[skip] {result.node_id}: {result.error}")
        elif getattr(result, "reused", False):
            self.line(f"[done] {result.node_id}: from the shared store")
        elif running is not None:  # computed by a concurrent run or a twin node meanwhile
            self.line(f"[done] {result.node_id}: done by another run")

    def line(self, text: str) -> None:
        """Whole lines, one writer at a time; above the live rows on a terminal."""
        if self.quiet:
            return
        with self.lock:
            if self._console is not None:
                self._console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self.out.write(text.rstrip("\n") + "\n")
                self.out.flush()

    def _plain_progress(self, r: Running) -> None:
        if not r.total:
            return
        quarter = 4 * r.step // r.total
        if quarter > r.quarter and r.step < r.total:
            r.quarter = quarter
            self.line(f"[ .. ] {r.node_id} {progress_text(r)}")

    # ------------------------------------------------------------ drawing

    def _table(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        with self.lock:
            nodes = list(self.running.values())
        for r in nodes:
            bar = ProgressBar(total=r.total or 1, completed=r.step, width=24, pulse=not r.total)
            # Text, not str: rich would read "[method=SFT]" in a node id as markup and drop it
            table.add_row(Text(r.node_id), bar, Text(progress_text(r)))
        if not nodes:
            table.add_row("(waiting)", "", "")
        return table

    def write_status(self, state: str = "running") -> None:
        from .store import write_json_atomic

        with self.lock:
            nodes = [*self.finished.values(), *(r.as_dict() for r in self.running.values())]
            seen = {n["node_id"] for n in nodes}
            nodes += [{"node_id": i, "state": "pending"} for i in self.pending if i not in seen]
        status = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "started_at": self.started,
            "updated_at": time.time(),
            "first_node_at": self.first_node_at,
            "state": state,
            "log": str(self.log_path),
            "nodes": nodes,
        }
        with contextlib.suppress(OSError):
            write_json_atomic(status_path(self.ws), status)


# ---------------------------------------------------------------- text


def progress_text(r: Running) -> str:
    parts = [f"{r.step}/{r.total}" if r.total else f"{time.time() - r.started:.0f}s"]
    if r.metric:
        parts.append(f"{r.metric[0]} {r.metric[1]:.4g}")
    if r.tokens_per_s:
        parts.append(f"{r.tokens_per_s:,.0f} tok/s")
    eta = r.eta_s()
    if eta is not None:
        parts.append(f"ETA {duration_text(eta)}")
    return "  ".join(parts)


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def metric_text(result: Any) -> str:
    key = next((k for k in KEY_METRICS if k in result.summary), None)
    return f"  {key}={fmt(result.summary[key])}" if key else ""


def failure_text(result: Any) -> str:
    """A failure as plain lines: what happened, the log's last lines, the log path."""
    return f"[FAIL] {result.node_id} after {result.duration_s:.1f}s: {result.error}\n  log: {result.log}"


def finished_record(result: Any) -> dict[str, Any]:
    return {
        "node_id": result.node_id,
        "state": result.status,
        "duration_s": round(result.duration_s, 1),
        "error": result.error.splitlines()[0] if result.error else "",
        "log": result.log,
    }


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def last_json_line(path: Path, tail_bytes: int = 8192) -> dict[str, Any]:
    """The last complete JSON line of a growing JSONL file (reads only its tail)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(row, dict):
            return row
    return {}


def print_summary(results: dict[str, Any], seconds: float, quiet: bool) -> None:
    """One line per node; a failure's details only when the run was quiet (else shown above)."""
    from psft_orchestrator.contract import NODE_STATUSES

    counts = {s: sum(r.status == s for r in results.values()) for s in NODE_STATUSES}
    status_width = max(len(s) for s in NODE_STATUSES)
    print(
        f"\nrun summary ({seconds:.1f}s): " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    )
    width = max(len(n) for n in results)
    for r in results.values():
        metrics = "  ".join(f"{k}={fmt(r.summary[k])}" for k in KEY_METRICS if k in r.summary)
        dur = f"{r.duration_s:6.1f}s" if r.status in ("success", "failed") else "       "
        if r.status == "failed":
            metrics = f"log: {r.log}"
        elif getattr(r, "reused", False):
            metrics = f"(shared store)  {metrics}"
        print(f"  {r.node_id.ljust(width)}  {r.status:{status_width}} {dur}  {metrics}")
    if quiet:
        for r in results.values():
            if r.status == "failed":
                print(f"\n{failure_text(r)}")


# ---------------------------------------------------------------- chatter


@contextlib.contextmanager
def chatter_to(log_path: Path) -> Iterator[IO[str]]:
    """Send everything this process prints (Python and file descriptor 2) to `log_path`.

    Yields a stream on the real stdout, for the view. Libraries that keep a reference to the
    original `sys.stderr` (Prefect's console handler, tqdm) write to descriptor 2, which points
    at the log meanwhile; child processes inherit it too.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    saved_err = os.dup(2)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below, after restoring fd 2
    os.dup2(log.fileno(), 2)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        yield out
    finally:
        sys.stdout, sys.stderr = saved
        os.dup2(saved_err, 2)
        os.close(saved_err)
        log.close()
        out.flush()
        out.close()
