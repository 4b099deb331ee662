"""The monitor: a real Prefect server and UI, a run that reports to it, and the page in Chromium.

The UI is checked the way a person would: headless Chromium renders the flow-runs page and the
run's name must appear in it. The screenshot is kept in .test-artifacts/ for a look.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import SMALL, psft_run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_prefect_ui_shows_the_run(tmp_path: Path, fake_env):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by `make test` (Debian package chromium)"
    ws = tmp_path / "ws"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **fake_env,
        "PREFECT_HOME": str(ws / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": url,
    }
    (ws / ".prefect").mkdir(parents=True)
    server_log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(1)
        else:
            pytest.fail("Prefect server did not start within 180 s")
        # `make ui` leaves the URL here; psft-run picks it up without PREFECT_API_URL.
        (ws / ".prefect" / "api_url").write_text(url)
        proc = psft_run(
            str(SMALL), "--workspace", str(ws), env={**env, "PSFT_FAKE_FAIL": "eval[method=PSFT]"}
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        run_name = json.loads(next((ws / "runs").glob("*.json")).read_text())["run_id"]

        flows = api(url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
        assert len(flows) == 1
        tasks = api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flows[0]["id"]]}}})
        states = {t["name"].rsplit("-", 1)[0]: t["state"]["name"] for t in tasks}
        assert states == {
            "train[method=SFT]": "Completed",
            "train[method=PSFT]": "Completed",
            "eval[method=SFT]": "Completed",
            "eval[method=PSFT]": "Failed",
        }

        page = f"http://127.0.0.1:{port}/runs/flow-run/{flows[0]['id']}"
        out_dir = REPO / ".test-artifacts"
        out_dir.mkdir(exist_ok=True)
        profile = tmp_path / "chromium-profile"
        dom = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                page,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run_name in dom.stdout, (
            f"run name not in the rendered page ({len(dom.stdout)} bytes)"
        )
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--window-size=1400,900",
                f"--screenshot={out_dir / 'prefect-ui.png'}",
                page,
            ],
            capture_output=True,
            timeout=180,
            check=True,
        )
        assert (out_dir / "prefect-ui.png").stat().st_size > 10_000
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
