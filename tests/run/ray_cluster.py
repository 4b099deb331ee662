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
NODE_MARKER = "PSFT_TEST_CLUSTER_NODE"  # one `ray start`, to undo a failed one
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
        attempts: int = 3,
    ) -> None:
        """Start a node; with `hide`, in its own mount namespace with an empty tmpfs over
        `hide`, so that this node sees another directory there than the rest of the cluster.
        Ray gives a node a fixed 30 s to register, which a loaded machine misses: then what
        that `ray start` spawned is killed and it is tried again."""
        for attempt in range(1, attempts + 1):
            if head:
                self.port = free_port()
                self.address = f"127.0.0.1:{self.port}"
            mark = uuid.uuid4().hex[:10]
            proc = subprocess.run(
                self._start_cmd(resources, num_cpus, head, hide),
                env={**self.env, NODE_MARKER: mark},
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
            if proc.returncode == 0:
                return
            self._kill(f"{NODE_MARKER}={mark}")
            output = proc.stdout[-2000:] + proc.stderr[-2000:]
            if "timed out during startup" not in output or attempt == attempts:
                raise RuntimeError(f"ray start failed:\n{output}")

    def _start_cmd(
        self, resources: dict[str, float], num_cpus: int, head: bool, hide: Path | None
    ) -> list[str]:
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
            "--node-ip-address=127.0.0.1",
        ]
        if head:
            cmd += [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
            ]
        else:
            cmd += [f"--address={self.address}"]
        if hide is None:
            return cmd
        script = f"mount -t tmpfs psft-hidden {shlex.quote(str(hide))} && exec {shlex.join(cmd)}"
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

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

    def pids(self, needle: str | None = None) -> list[int]:
        """Processes carrying this cluster's marker (what `ray start` spawned, and theirs), or
        the environment entry `needle`."""
        wanted = (needle or f"{MARKER}={self.id}").encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Kill every process of this cluster; then remove its temp dir."""
        self._kill(f"{MARKER}={self.id}")
        subprocess.run(["rm", "-rf", str(self.temp_dir)], check=False)

    def _kill(self, needle: str) -> None:
        """SIGTERM, then SIGKILL, the processes whose environment holds `needle`."""
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.pids(needle):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while self.pids(needle) and time.monotonic() < deadline:
                time.sleep(0.2)
