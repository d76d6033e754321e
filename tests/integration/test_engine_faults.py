"""The process tree of ``dvn serve --workers N`` under faults, with real processes: the engine
killed under load, a front end killed, SIGTERM, a malformed IPC frame."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import zmq

from bench._process import ServerProcess, dvn_serve
from tests.server.helpers import npy_bytes

NPY = {"content-type": "application/x-npy"}


def started(server: ServerProcess, role: str) -> list[int]:
    """The pids the supervisor logged for ``role`` (``engine``, ``frontend-0``, ...), oldest
    first."""
    return [
        int(pid) for pid in re.findall(rf"process started role={role} pid=(\d+)", server.output())
    ]


def engine_address(server: ServerProcess) -> str:
    found = re.search(r"engine=(ipc://\S+)", server.output())
    assert found, server.output()
    return found.group(1)


def wait_for(predicate: object, what: str, timeout: float = 60) -> None:
    assert callable(predicate)
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Outcome:
    status: int
    type: str | None
    retry_after: str | None
    sent: float
    done: float


class Load:
    """``clients`` threads sending level-4 requests back to back until stopped; every
    request's outcome is kept, and every exception, which stops its client (with ``reconnect``,
    a dropped connection does not: the client opens another)."""

    def __init__(self, server: ServerProcess, clients: int, reconnect: bool = False) -> None:
        self.server = server
        self.reconnect = reconnect
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self.errors: list[BaseException] = []
        self.body = npy_bytes(np.random.default_rng(0).standard_normal((3, 32, 32), "float32"))
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post("/infer/heavy?level=4", content=self.body, headers=NPY)
                except BaseException as e:  # a hang (timeout) or a dropped connection
                    self.errors.append(e)
                    dropped = isinstance(e, httpx.TransportError) and not isinstance(
                        e, httpx.TimeoutException
                    )
                    if self.reconnect and dropped:
                        continue  # reconnect, as users' clients do
                    return
                kind = None if r.status_code == 200 else r.json()["error"]["type"]
                self.outcomes.append(
                    Outcome(
                        r.status_code, kind, r.headers.get("retry-after"), sent, time.monotonic()
                    )
                )

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.fixture(scope="module")
def server(
    heavy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("faults") / "serve.log"
    env = {"DVN_TORCH_THREADS": "1", "DVN_MAX_BATCH_SIZE": "2"}
    with dvn_serve(heavy_checkpoint, log, "--workers", "2", env=env) as process:
        yield process


def test_an_engine_killed_under_load_fails_its_requests_fast_and_comes_back(
    server: ServerProcess,
) -> None:
    engine = started(server, "engine")[-1]
    with Load(server, clients=4) as load:
        wait_for(lambda: sum(o.status == 200 for o in load.outcomes) >= 4, "answers under load")
        killed = time.monotonic()
        psutil.Process(engine).send_signal(signal.SIGKILL)
        wait_for(lambda: not ready(server), "readiness to drop", timeout=10)
        wait_for(lambda: len(started(server, "engine")) == 2, "the engine to be restarted")
        wait_for(lambda: ready(server), "the restarted engine to warm up")
        resumed = time.monotonic()
        wait_for(
            lambda: any(o.status == 200 and o.sent > resumed for o in load.outcomes),
            "service to resume",
        )
    assert load.errors == []
    refused = [o for o in load.outcomes if o.status != 200]
    assert refused, "no request met the dead engine"
    assert {(o.status, o.type) for o in refused} <= {
        (503, "engine_unavailable"),
        (503, "not_ready"),
    }
    assert all(o.retry_after == "1" for o in refused)
    # The requests the engine held when it died were answered 503 within 1 s of its death.
    in_flight = [o for o in refused if o.sent < killed]
    assert in_flight, "no request was in flight when the engine died"
    assert max(o.done - killed for o in in_flight) < 1.0
    assert all(o.type == "engine_unavailable" for o in in_flight)
    r = httpx.post(server.url + "/infer/heavy?level=1", content=load.body, headers=NPY, timeout=30)
    assert r.status_code == 200


def test_a_killed_front_end_is_restarted_and_the_rest_carry_on(server: ServerProcess) -> None:
    wait_for(lambda: ready(server), "readiness")
    victim = started(server, "frontend-0")[-1]
    engine = started(server, "engine")[-1]
    with Load(server, clients=2, reconnect=True) as load:
        wait_for(lambda: sum(o.status == 200 for o in load.outcomes) >= 2, "answers")
        psutil.Process(victim).send_signal(signal.SIGKILL)
        wait_for(lambda: len(started(server, "frontend-0")) >= 2, "the front end to restart")
        after = time.monotonic()
        wait_for(
            lambda: sum(o.status == 200 and o.sent > after for o in load.outcomes) >= 4,
            "answers after the restart",
        )
    # The engine and the other front end carried on: same engine, answers throughout.
    assert started(server, "engine")[-1] == engine
    assert psutil.pid_exists(engine)
    assert {o.status for o in load.outcomes} == {200}
    # A client whose connection the dead front end held sees it dropped once, reconnects and
    # is answered by the live front end; nothing hangs.
    assert all(isinstance(e, httpx.TransportError) for e in load.errors), load.errors
    assert not any(isinstance(e, httpx.TimeoutException) for e in load.errors), load.errors
    assert len(load.errors) <= 2, load.errors


def test_a_malformed_ipc_frame_is_refused_and_logged(server: ServerProcess) -> None:
    wait_for(lambda: ready(server), "readiness")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 5000)  # term() waits until the frames are out
    sock.connect(engine_address(server))
    try:
        sock.send_multipart([b"\xc1 not msgpack"])
        sock.send_multipart([b"\x82\xa4type\xa5infer\xa2id\x01"])  # an infer missing fields
        sock.send_multipart([b""])
    finally:
        sock.close()
        ctx.term()
    wait_for(lambda: server.output().count("malformed IPC frame refused") >= 3, "the log lines")
    body = npy_bytes(np.zeros((3, 32, 32), "float32"))
    r = httpx.post(server.url + "/infer/heavy?level=1", content=body, headers=NPY, timeout=30)
    assert r.status_code == 200
    assert len(started(server, "engine")) == 2  # the engine of the first test's restart, alive


def test_sigterm_answers_everything_and_leaves_no_process(
    heavy_checkpoint: Path, tmp_path: Path
) -> None:
    env = {"DVN_TORCH_THREADS": "1"}
    with dvn_serve(heavy_checkpoint, tmp_path / "serve.log", "--workers", "2", env=env) as srv:
        tree = [srv.process.pid, *(c.pid for c in psutil.Process(srv.process.pid).children(True))]
        assert len(tree) == 4  # supervisor, engine, two front ends
        with Load(srv, clients=4) as load:
            wait_for(lambda: len(load.outcomes) >= 4, "answers")
            signalled = time.monotonic()
            srv.process.send_signal(signal.SIGTERM)
            assert srv.process.wait(60) == 0
        logged = srv.output().count("path=/infer/heavy")
    # Every request a front end took in was answered: as many answers as access-log lines,
    # 200 (computed) or 503 (sent while draining).
    assert len(load.outcomes) == logged
    assert {(o.status, o.type) for o in load.outcomes} <= {(200, None), (503, "not_ready")}
    # What failed on the wire was sent after the signal, to a port closing: never taken in.
    assert all(isinstance(e, httpx.TransportError) for e in load.errors)
    assert all(o.sent < signalled or o.status == 503 for o in load.outcomes if o.status != 200)
    time.sleep(0.5)
    assert [pid for pid in tree if psutil.pid_exists(pid) and not _zombie(pid)] == []


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
