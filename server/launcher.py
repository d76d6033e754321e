"""``dvn serve --workers N``: the process tree. One engine process holds the weights on the
device; N front-end processes accept on one listening socket that this supervisor binds
and hands them, and talk to the engine over ZMQ (docs/architecture.md).

The supervisor restarts a process that dies: an engine (its front ends answer 503
``engine_unavailable`` meanwhile, then ``not_ready`` until it has warmed up) or a front
end (the others carry on). On SIGTERM/SIGINT it stops the front ends first (each drains:
every request it accepted is answered), then the engine, and exits 0 with nothing left
behind; a second signal kills the tree at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from server.engine.runtime import default_torch_threads, pick_device
from server.logs import SERVER
from server.settings import Settings
from server.shutdown import EXIT_GRACE_S, FRONTEND_EXTRA_S

# A child that keeps dying is restarted at most this often.
RESTART_BACKOFF_S = 0.5


def default_workers(device: str) -> int:
    """Front ends when ``--workers`` is not given: on a GPU, one for every core but one (the
    engine's); on a CPU, half the cores (the engine computes on the rest), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if device.startswith("cuda"):
        return max(1, cores - 1)
    return max(1, cores // 2)


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    """Linux: the child gets SIGKILL if the supervisor dies, so no process is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    role: str  # "engine" or "frontend-<i>"
    command: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, pass_fds=self.pass_fds, preexec_fn=_die_with_parent
        )
        self.started = time.monotonic()
        SERVER.info(
            "process started", extra={"fields": {"role": self.role, "pid": self.process.pid}}
        )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return 0
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.stopping = False
        self.forced = False
        self.listener: socket.socket | None = None
        self.port = settings.port

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self.stopping:
            self.forced = True
            return
        self.stopping = True
        SERVER.info("signal received: draining", extra={"fields": {"signal": sig}})

    def bind(self) -> socket.socket:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        listener = socket.create_server((s.host, s.port), family=family, backlog=2048)
        listener.set_inheritable(True)
        self.port = listener.getsockname()[1]
        self.listener = listener
        return listener

    def run(self) -> int:
        """Serve until a signal; 0 when every process exited cleanly after a drain."""
        s = self.settings
        listener = self.listener or self.bind()
        workdir = Path(tempfile.mkdtemp(prefix="dvn-serve-"))
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        address = f"ipc://{workdir / 'engine.sock'}"
        engine_settings = s
        if s.torch_threads is None:
            threads = default_torch_threads(pick_device(s.device), self.workers)
            if threads is not None:
                engine_settings = s.model_copy(update={"torch_threads": threads})
        base_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        python = sys.executable
        engine = Child(
            "engine",
            [python, "-m", "server.engine.process", "--address", address,
             "--settings", engine_settings.model_dump_json()],
            base_env,
        )  # fmt: skip
        fd = listener.fileno()
        frontend_command = [python, "-m", "server.http.worker", "--fd", str(fd),
                            "--address", address, "--settings", s.model_dump_json()]  # fmt: skip
        frontend_env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        frontends = [
            Child(f"frontend-{i}", frontend_command, frontend_env, pass_fds=(fd,))
            for i in range(self.workers)
        ]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        SERVER.info(
            "serving",
            extra={
                "fields": {
                    "url": f"http://{s.host}:{self.port}",
                    "frontends": self.workers,
                    "engine": address,
                }
            },
        )
        try:
            engine.start()
            for child in frontends:
                child.start()
            self._watch(engine, frontends, metrics_dir)
            return self._stop(engine, frontends)
        finally:
            listener.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _watch(self, engine: Child, frontends: list[Child], metrics_dir: Path) -> None:
        while not self.stopping:
            time.sleep(0.05)
            for child in (engine, *frontends):
                code = child.exited()
                if code is None or self.stopping:
                    continue
                SERVER.warning(
                    "process died: restarting",
                    extra={"fields": {"role": child.role, "exit_code": code}},
                )
                if child is not engine and child.process is not None:
                    _mark_dead(child.process.pid, metrics_dir)
                if time.monotonic() - child.started < RESTART_BACKOFF_S:
                    time.sleep(RESTART_BACKOFF_S)
                child.restarts += 1
                child.start()

    def _stop(self, engine: Child, frontends: list[Child]) -> int:
        """Every process drains at once: the front ends refuse new requests and wait for
        the answers of those they accepted; the engine answers what it holds within the
        drain timeout, the rest with 503, and exits once every answer has left."""
        limit = self.settings.drain_timeout_s + EXIT_GRACE_S + FRONTEND_EXTRA_S
        if self.listener is not None:
            self.listener.close()  # the front ends' copies close as each one exits
        children = [*frontends, engine]
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + limit
        codes: list[int | None] = []
        for child in children:
            while not self.forced and time.monotonic() < deadline:
                if child.wait(0.05) is not None:
                    break
            if child.exited() is None:
                SERVER.error("process did not exit: killed", extra={"fields": {"role": child.role}})
                child.signal(signal.SIGKILL)
                child.wait(5)
            codes.append(child.exited())
        ok = all(code == 0 for code in codes)
        SERVER.info("stopped", extra={"fields": {"clean": ok}})
        return 0 if ok else 1


def _mark_dead(pid: int, metrics_dir: Path) -> None:
    """A dead front end's live gauges leave the multiprocess metrics (its counters stay)."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]
