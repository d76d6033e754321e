"""``dvn serve --workers N``: the process tree. One engine process holds the weights on the
device; N front-end processes accept on one listening socket that this supervisor binds
and hands them, and talk to the engine over ZMQ (docs/architecture.md).

The supervisor restarts a process that dies: an engine (its front ends answer 503
``engine_unavailable`` meanwhile, then ``not_ready`` until it has warmed up) or a front
end (the others carry on). On SIGTERM/SIGINT it stops the front ends first (each drains:
every request it accepted is answered), then the engine, and exits 0 with nothing left
behind; a second signal kills the tree at once.

The supervisor imports no torch: the engine loads (and so verifies) the checkpoint, picks
the device and, unless ``--workers`` says, the number of front ends, and reports them
before any front end starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
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

from model_store.manifest import CheckpointError
from server.logs import SERVER
from server.settings import Settings
from server.shutdown import EXIT_GRACE_S, FRONTEND_EXTRA_S

# A child that keeps dying is restarted at most this often.
RESTART_BACKOFF_S = 0.5


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

    def start(self, log: bool = True) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, pass_fds=self.pass_fds, preexec_fn=_die_with_parent
        )
        self.started = time.monotonic()
        if log:
            self.log_started()

    def log_started(self) -> None:
        pid = None if self.process is None else self.process.pid
        SERVER.info("process started", extra={"fields": {"role": self.role, "pid": pid}})

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
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        """``workers``: the front ends; ``None``, as many as the engine's device calls for
        (``server.engine.runtime.default_frontends``)."""
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
        """Serve until a signal; 0 when every process exited cleanly after a drain.

        Raises:
            CheckpointError: the engine could not load the checkpoint (nothing is served).
        """
        s = self.settings
        listener = self.listener or self.bind()
        workdir = Path(tempfile.mkdtemp(prefix="dvn-serve-"))
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        address = f"ipc://{workdir / 'engine.sock'}"
        base_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        python = sys.executable
        engine_command = [python, "-m", "server.engine.process", "--address", address,
                          "--settings", s.model_dump_json()]  # fmt: skip
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        try:
            engine = self._start_engine(engine_command, base_env)
            fd = listener.fileno()
            frontend_command = [python, "-m", "server.http.worker", "--fd", str(fd),
                                "--address", address, "--settings", s.model_dump_json()]  # fmt: skip
            frontend_env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
            assert self.workers is not None
            frontends = [
                Child(f"frontend-{i}", frontend_command, frontend_env, pass_fds=(fd,))
                for i in range(self.workers)
            ]
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
            for child in frontends:
                child.start()
            self._watch(engine, frontends, metrics_dir)
            return self._stop(engine, frontends)
        finally:
            listener.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _start_engine(self, command: list[str], env: dict[str, str]) -> Child:
        """Start the engine and wait until it has loaded the checkpoint: it decides the
        device, and with it the front ends when ``workers`` is ``None``. Nothing is logged
        before, so a checkpoint it refuses is the first line ``dvn serve`` prints."""
        read_end, write_end = os.pipe()
        frontends = [] if self.workers is None else ["--frontends", str(self.workers)]
        engine = Child(
            "engine", [*command, *frontends, "--report-fd", str(write_end)], env, (write_end,)
        )
        try:
            engine.start(log=False)
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            line = pipe.readline()
        try:
            loaded = json.loads(line)
        except ValueError:
            code = engine.wait(EXIT_GRACE_S)
            raise CheckpointError(
                f"the engine exited (code {code}) before it loaded the checkpoint; its log is above"
            ) from None
        if "error" in loaded:
            engine.wait(EXIT_GRACE_S)
            raise CheckpointError(loaded["error"])
        self.workers = int(loaded["frontends"])
        engine.log_started()
        SERVER.info(
            "loaded checkpoint",
            extra={
                "fields": {
                    "path": str(self.settings.checkpoint),
                    "name": loaded["name"],
                    "sha256": loaded["sha256"][:12],
                    "device": loaded["device"],
                }
            },
        )
        # A restarted engine keeps the front ends' count and reports to no one.
        engine.command = [*command, "--frontends", str(self.workers)]
        engine.pass_fds = ()
        return engine

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
