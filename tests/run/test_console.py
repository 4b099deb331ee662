"""The terminal view: live rows under a real pseudo-terminal, whole plain lines elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from psft_orchestrator.contract import MetricsWriter, write_progress
from psft_orchestrator.run.console import RunView, chatter_to
from psft_orchestrator.run.schedule import NodeResult

from .conftest import SMALL, run_cmd


def result(node_id: str, status: str, **kw) -> NodeResult:
    return NodeResult(node_id, node_id.split("[")[0], "f" * 64, status, **kw)


def test_plain_lines_from_many_threads_never_interleave(tmp_path: Path):
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out, RunView(tmp_path, "r1", out, live=False) as view:

        def node(i: int) -> None:
            for k in range(50):
                view.node_started(f"n{i}[k={k}]", "sft/native", None, 1)
                view.node_finished(result(f"n{i}[k={k}]", "success", duration_s=1.0))

        threads = [threading.Thread(target=node, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = out_path.read_text().splitlines()[1:]  # after the "run r1; log ..." line
    assert len(lines) == 8 * 50 * 2
    assert all(line.startswith(("[run ] ", "[done] ")) for line in lines), lines[:5]
    assert all(line.count("[") == 2 for line in lines)  # one event per line


def test_plain_progress_failure_lines_and_status_file(tmp_path: Path):
    build = tmp_path / "build"
    build.mkdir()
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out, RunView(tmp_path, "r1", out, live=False) as view:
        view.node_started("train", "psft/native", build, 1)
        with MetricsWriter(build / "metrics.jsonl") as m:
            for step in range(1, 9):
                m.log(step, loss=1.0 / step, tokens_per_s=1234.0)
                write_progress(build, step, 8)
                time.sleep(0.35)
        status = json.loads((tmp_path / "status.json").read_text())
        row = next(n for n in status["nodes"] if n["node_id"] == "train")
        assert row["state"] == "running" and row["total"] == 8 and row["step"] >= 5
        assert row["metric"][0] == "loss" and row["eta_s"] is not None
        error = "ValueError: bad\n--- last lines of x.log ---\nline 1\nline 2"
        view.node_finished(result("train", "failed", duration_s=3.0, error=error, log="x.log"))
    text = out_path.read_text()
    assert "[ .. ] train " in text and "tok/s" in text  # a quarter passed: a progress line
    assert "[FAIL] train after 3.0s: ValueError: bad\n--- last lines of x.log ---\nline 1\n" in text
    assert text.count("ValueError: bad") == 1
    final = json.loads((tmp_path / "status.json").read_text())
    assert final["state"] == "finished" and final["nodes"][0]["error"] == "ValueError: bad"


def test_chatter_goes_to_the_log(tmp_path: Path):
    log = tmp_path / "run.log"
    probe = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from psft_orchestrator.run.console import chatter_to\n"
        f"with chatter_to(Path({str(log)!r})) as out:\n"
        "    print('python stdout chatter'); print('python stderr chatter', file=sys.stderr)\n"
        "    os.write(2, b'fd 2 chatter\\n')\n"
        "    out.write('for the user\\n')\n"
        "print('after')\n"
    )
    proc = subprocess.run(
        [os.sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout == "for the user\nafter\n" and proc.stderr == ""
    assert log.read_text().splitlines() == [
        "python stdout chatter",
        "python stderr chatter",
        "fd 2 chatter",
    ]
    assert chatter_to  # imported for the reader: the function under test


def screen(tmux: list[str]) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_live_rows_under_a_real_terminal(tmp_path: Path, fake_env):
    """psft-run in tmux: mid-run the screen shows a node's progress row; chatter stays off it."""
    ws, done = tmp_path / "ws", tmp_path / "done"
    tmux = ["tmux", "-L", f"psft-test-{os.getpid()}"]  # a private server: it gets our env
    env = {**fake_env, "PSFT_FAKE_SLEEP": "40", "PSFT_FAKE_STEPS": "40"}
    env["PSFT_CACHE_DIR"] = str(tmp_path / "cache")  # the toy model is written by this run
    env.pop("TMUX", None)
    cmd = " ".join(run_cmd(str(SMALL), "--workspace", str(ws), "--no-prefect"))
    shell = f"{cmd}; echo exit=$? > {done}; sleep 600"
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "160", "-y", "40", shell], check=True, env=env
    )
    try:
        seen_row, deadline = "", time.time() + 600
        while time.time() < deadline and not done.exists():
            text = screen(tmux)
            rows = [ln for ln in text.splitlines() if ln.startswith("train[") and "/40" in ln]
            if any("loss" in ln and "ETA" in ln for ln in rows):
                seen_row = next(ln for ln in rows if "ETA" in ln)
                break
            time.sleep(1)
        assert seen_row, f"no progress row on the screen:\n{screen(tmux)}"
        while time.time() < deadline and not done.exists():
            time.sleep(2)
        final = screen(tmux)
        assert done.read_text().strip() == "exit=0", final
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert "━" in seen_row  # the bar
    assert "run summary" in final and "[done] train[method=SFT] in " in final
    assert "Writing model shards" not in final  # transformers' bar went to the run log
    log = next((ws / "runs").glob("*.log")).read_text()
    assert "Writing model shards" in log


def status_cli(ws: Path) -> subprocess.CompletedProcess:
    cmd = run_cmd("status", "--workspace", str(ws))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_status_from_another_terminal(tmp_path: Path):
    build = tmp_path / "build"
    build.mkdir()
    with (tmp_path / "out.txt").open("w") as out:
        view = RunView(tmp_path, "r1", out, live=False, pending=["train", "eval", "other"])
        with view:
            view.node_started("train", "psft/native", build, 1)
            with MetricsWriter(build / "metrics.jsonl") as m:
                for step in range(1, 5):
                    m.log(step, loss=0.5)
                    write_progress(build, step, 10)
                    time.sleep(0.6)
            view.node_finished(
                result("other", "failed", duration_s=2.0, error="Boom\nmore", log="o.log")
            )
            time.sleep(1.5)
            live = status_cli(tmp_path)
    assert live.returncode == 0, live.stderr
    text = live.stdout
    assert "run r1: running" in text
    assert "train  running" in text and "/10" in text and "loss 0.5" in text and "ETA" in text
    assert "eval   pending" in text
    assert "failed: other: Boom\n  log: o.log" in text
    assert "run r1: finished" in status_cli(tmp_path).stdout

    status = json.loads((tmp_path / "status.json").read_text())
    status.update(state="running", pid=2**22 + 12345)  # a run whose process is gone
    (tmp_path / "status.json").write_text(json.dumps(status))
    assert "killed (process" in status_cli(tmp_path).stdout
    empty = status_cli(tmp_path / "nothing")
    assert empty.returncode == 2 and "no run found" in empty.stderr
