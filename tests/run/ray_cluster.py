"""A real multi-node Ray cluster on this machine, started with `ray start` and torn down by the
processes it started only (never a global `ray stop`, which would kill other sessions' Ray).

Every process `ray start` spawns (GCS, raylets, workers, agents) inherits the environment
variable `PSFT_TEST_CLUSTER=<id>`; teardown kills exactly the processes that carry this id.
Used by tests/run/test_cluster.py and benchmarks/orchestration.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MARKER = "PSFT_TEST_CLUSTER"
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """A Ray head plus worker nodes, each with its own custom resources and CPU count."""

    def __init__(self, env: dict[str, str] | None = None, start_timeout_s: int = 300):
        self.id = uuid.uuid4().hex[:10]
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"rc-{self.id[:6]}-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**(env or os.environ), MARKER: self.id, "RAY_AUTH_MODE": "disabled"}
        self.timeout = start_timeout_s

    def add_node(
        self,
        resources: dict[str, float],
        num_cpus: int = 1,
        head: bool = False,
        hide: Path | None = None,
    ) -> None:
        """Start a node; with `hide`, in its own mount namespace with an empty tmpfs over
        `hide`, so that this node sees another directory there than the rest of the cluster."""
        cmd = [
            RAY,
            "start",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(resources)}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        if head:
            cmd += [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                "--node-ip-address=127.0.0.1",
            ]
        else:
            cmd += [f"--address={self.address}", "--node-ip-address=127.0.0.1"]
        if hide is not None:
            script = (
                f"mount -t tmpfs psft-hidden {shlex.quote(str(hide))} && exec {shlex.join(cmd)}"
            )
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=self.timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def nodes(self) -> dict[str, dict[str, float]]:
        """Alive node id -> its resources (asked in a child process: this one never joins Ray)."""
        code = (
            "import json, ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cannot list the cluster's nodes:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, n: int) -> dict[str, dict[str, float]]:
        """Until `n` nodes are alive; returns them."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, ValueError, IndexError):
                nodes = self.nodes()
                if len(nodes) >= n:
                    return nodes
            time.sleep(2)
        raise TimeoutError(f"the Ray cluster at {self.address} did not reach {n} nodes")

    def pids(self) -> list[int]:
        """Processes carrying this cluster's marker (what `ray start` spawned, and theirs)."""
        needle = f"{MARKER}={self.id}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process of this cluster; then remove its temp dir."""
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        subprocess.run(["rm", "-rf", str(self.temp_dir)], check=False)
