"""Start a real ``dvn serve`` process on a free loopback port (benchmarks and integration
tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextmanager
def dvn_serve(
    checkpoint: Path | str,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180,
) -> Iterator[ServerProcess]:
    """Run ``dvn serve`` until the block ends (SIGTERM, then SIGKILL if it hangs)."""
    port = free_port()
    cmd = [sys.executable, "-m", "dvn", "serve", "--checkpoint", str(checkpoint),
           "--host", "127.0.0.1", "--port", str(port), *args]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "DVN_PROFILE_ITERS": "1", **(env or {})},
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any], timeout: float = 60) -> bool:
    """SIGTERM, then SIGKILL if it is still running ``timeout`` s later: True if it had to
    be killed."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False


def wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"dvn serve exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"dvn serve not ready after {timeout} s:\n{server.output()}")


def wait_idle(url: str, timeout: float = 60.0) -> float:
    """Wait until the server has no inference request in flight (``dvn_inflight_requests``
    0: the previous run's backlog drained) and return the seconds waited, so that no run
    starts behind the one before it. Raises ``TimeoutError`` past ``timeout``."""
    started = time.monotonic()
    while True:
        text = httpx.get(url + "/metrics", timeout=10).text
        inflight = next(
            (float(line.split()[-1]) for line in text.splitlines()
             if line.startswith("dvn_inflight_requests ")),
            0.0,
        )  # fmt: skip
        waited = time.monotonic() - started
        if inflight == 0:
            return waited
        if waited > timeout:
            raise TimeoutError(
                f"dvn serve still has {inflight:g} requests in flight after {timeout} s"
            )
        time.sleep(0.1)
