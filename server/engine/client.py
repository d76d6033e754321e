"""One engine client API, in process and across processes (vLLM's ``EngineCoreClient``
with its in-process and multi-process variants).

- :class:`InprocClient` runs the engine in the front end's own event loop: tests,
  ``dvn serve --workers 0``, debugging.
- :class:`MPClient` talks to an engine process over ZMQ (``server.engine.process``): a
  DEALER socket per front end, msgspec headers, arrays as zero-copy frames. It bounds the
  requests it has in flight, fails every request in flight with 503 ``engine_unavailable``
  as soon as the engine's connection drops or its status stops answering, and keeps the
  engine's status (ready, draining) current for the front end's readiness.

Both raise :class:`~server.errors.ServeError` for every failure and return
:class:`~server.engine.outcome.Answer` for an answered request.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio
from prometheus_client import generate_latest

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine import wire
from server.engine.core import Admission, shed_for
from server.engine.outcome import Answer, ClientDisconnected, outcome_of
from server.engine.runtime import Runtime, engine_status
from server.errors import (
    BacklogShed,
    BudgetUnsatisfiable,
    DeadlineExceeded,
    DeadlineUnmeetable,
    EngineUnavailable,
    NotReady,
    ServeError,
    ServerBusy,
    shutting_down,
)
from server.logs import SERVER

ENGINE_DOWN = (
    "the inference engine is not answering (starting, or restarting after a failure); retry shortly"
)


@dataclass(frozen=True)
class EngineStatus:
    """What a front end knows of its engine: ``up`` (answering), ``ready`` (warmed up and
    not draining), and why not."""

    up: bool
    ready: bool = False
    loaded: bool = False
    draining: bool = False
    failed: str | None = None

    def check(self, probe: bool = False) -> None:
        """Raises the 503 a request gets from an engine in this state (``probe``: the
        shorter words of ``/readyz``)."""
        if not self.up:
            raise EngineUnavailable(ENGINE_DOWN, retry_after_s=1)
        if self.draining:
            raise shutting_down(probe)
        if self.failed is not None:
            raise NotReady(f"warm-up failed ({self.failed}); see the server log", retry_after_s=1)
        if not self.ready:
            raise NotReady(
                "the server is warming up"
                if probe
                else "the server is warming up (profiling every level); retry shortly",
                retry_after_s=1,
            )


def missed_kind(error: ServeError) -> str | None:
    """The budget kind an error refused a request for, if any."""
    if isinstance(error, DeadlineUnmeetable | DeadlineExceeded):
        return "latency"
    if isinstance(error, BudgetUnsatisfiable):
        return "memory"
    return None


class EngineClient(abc.ABC):
    """What a front end asks of the engine."""

    manifest: Manifest
    specs: dict[str, TaskSpec]
    # called with an answer's round trip outside the engine (dvn_ipc_seconds), if set
    observe_ipc: Callable[[float], None] | None = None
    _ids: itertools.count[int]

    def next_id(self) -> int:
        """A fresh id for a :class:`~server.engine.wire.Infer` or :class:`~server.engine.wire.Call`
        of this client."""
        if not hasattr(self, "_ids"):
            self._ids = itertools.count(1)
        return next(self._ids)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def status(self) -> EngineStatus:
        """The latest known status (no round trip)."""

    @abc.abstractmethod
    async def infer(
        self, request: wire.Infer, inputs: np.ndarray, entry: TaskEntry, budget: Budget | None
    ) -> Answer:
        """Answer ``inputs`` (B, C, H, W) float32. Raises ServeError."""

    @abc.abstractmethod
    def cancel(self, request_id: int) -> None:
        """The client of request ``request_id`` (``wire.Infer.id``) went away."""

    @abc.abstractmethod
    async def call(self, method: wire.Method, **args: Any) -> Any:
        """``plan``, ``models``, ``archive``, ``export_level``, ``metrics``, ``status``."""

    @abc.abstractmethod
    def refused(self, task: str, error: ServeError) -> None:
        """Count a request the front end refused before it reached the engine."""

    @abc.abstractmethod
    def admit(self, task: str, budget: Budget | None, elapsed_s: float = 0.0) -> None:
        """Refuse, before its body is read, a request of ``task`` whose latency budget
        (``elapsed_s`` of it spent already) the engine's queues would make it miss (:func:`~server.engine.core.shed_for`; the
        engine checks again, exactly, when it arrives).

        Raises:
            BacklogShed: 429 with Retry-After sized from the backlog.
        """

    def loaded(self) -> bool:
        return self.status().loaded


def call_engine(runtime: Runtime, method: str, args: dict[str, Any]) -> Any:
    """The synchronous :class:`~server.engine.wire.Call` methods, on the engine's side."""
    if method == "status":
        return engine_status(runtime)
    if method == "metrics":
        return generate_latest(runtime.metrics.registry)
    service = runtime.service
    if service is None:
        raise NotReady("the server is loading the checkpoint; retry shortly", retry_after_s=1)
    if method == "plan":
        return service.plan(args["task"], args["budget"], args["on_miss"], args["examples"])
    if method == "models":
        return service.summary()
    if method == "export_level":
        return service.export_level(args["task"], args["budget"])
    raise ValueError(f"no engine method {method!r}")


async def call_engine_async(runtime: Runtime, method: str, args: dict[str, Any]) -> Any:
    if method == "archive":
        if runtime.service is None:
            raise NotReady("the server is loading the checkpoint; retry shortly", retry_after_s=1)
        return await runtime.service.archive(args["task"], args["level"])
    return call_engine(runtime, method, args)


class InprocClient(EngineClient):
    """The engine in this process's event loop: no IPC, no copies."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        await self.runtime.start()
        assert self.runtime.checkpoint is not None
        self.manifest = self.runtime.checkpoint.manifest
        specs = self.runtime.checkpoint.model.config.tasks
        self.specs = {s.name: s for s in specs}

    async def close(self) -> None:
        await self.runtime.stop()

    def status(self) -> EngineStatus:
        s = engine_status(self.runtime)
        return EngineStatus(True, s["ready"], s["loaded"], s["draining"], s["failed"])

    async def infer(
        self, request: wire.Infer, inputs: np.ndarray, entry: TaskEntry, budget: Budget | None
    ) -> Answer:
        service = self.runtime.service
        if service is None or not self.runtime.ready:
            self.status().check()
        assert service is not None
        return await service.infer(request, inputs, key=request.id)

    def cancel(self, request_id: int) -> None:
        if self.runtime.service is not None:
            self.runtime.service.cancel(request_id)

    async def call(self, method: wire.Method, **args: Any) -> Any:
        return await call_engine_async(self.runtime, method, args)

    def refused(self, task: str, error: ServeError) -> None:
        if self.runtime.service is not None:
            shed = isinstance(error, BacklogShed)
            self.runtime.service.count_refused(
                task, outcome_of(error), missed_kind(error), shed=shed
            )

    def admit(self, task: str, budget: Budget | None, elapsed_s: float = 0.0) -> None:
        service = self.runtime.service
        if service is not None and self.runtime.ready and task in service.tasks:
            refusal = shed_for(budget, service.admission(task), elapsed_s)
            if refusal is not None:
                raise refusal


@dataclass
class _Waiting:
    future: asyncio.Future[tuple[wire.Reply, np.ndarray | None]]
    sent: float


class MPClient(EngineClient):
    """A front end's connection to the engine process at ``address``.

    ``max_inflight`` bounds the inference requests this front end has at the engine: past
    it, 429 ``server_busy`` at once (the engine is never sent more than it was allowed, so
    ZMQ's high-water mark is never where a request is dropped). ``status_interval_s``: how
    often the engine's status is asked. An engine whose connection drops is down at once (a
    dead process); one that does not answer its status within ``down_after_s`` is down too
    (a hung one): long enough that a busy engine on a loaded machine is not taken for dead.
    """

    def __init__(
        self,
        address: str,
        manifest: Manifest,
        specs: dict[str, TaskSpec],
        *,
        max_inflight: int,
        status_interval_s: float = 0.05,
        down_after_s: float = 10.0,
        call_timeout_s: float = 30.0,
    ) -> None:
        self.address = address
        self.manifest = manifest
        self.specs = specs
        self.max_inflight = max_inflight
        self.status_interval_s = status_interval_s
        self.down_after_s = down_after_s
        self.call_timeout_s = call_timeout_s
        self._waiting: dict[int, _Waiting] = {}
        self._abandoned: set[int] = set()  # cancelled by their clients
        self.inflight = 0  # inference requests at the engine
        self._status = EngineStatus(up=False)
        self._refused: Counter[tuple[str, str, str | None, bool]] = Counter()
        self._admissions: dict[str, Admission] = {}  # the engine's, as of its last status
        self._tasks: list[asyncio.Task[None]] = []
        self._ctx: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, f"fe-{os.getpid()}-{id(self):x}".encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for an engine that is not connected
        sock.setsockopt(zmq.LINGER, 0)
        hwm = 4 * self.max_inflight + 1024  # above what the in-flight bound lets through
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sock.connect(self.address)
        self._socket = sock
        self._tasks = [
            asyncio.create_task(self._receive(), name="dvn-engine-receive"),
            asyncio.create_task(self._watch(monitor), name="dvn-engine-monitor"),
            asyncio.create_task(self._poll_status(), name="dvn-engine-status"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(EngineUnavailable("the front end is shutting down", retry_after_s=1))
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._socket.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()

    # -- status --------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        return self._status

    def _down(self, why: str) -> None:
        if self._status.up:
            SERVER.warning("engine down", extra={"fields": {"why": why}})
        self._status = EngineStatus(up=False)
        self._fail_all(EngineUnavailable(ENGINE_DOWN, retry_after_s=1))

    def _fail_all(self, error: ServeError) -> None:
        waiting, self._waiting = self._waiting, {}
        for w in waiting.values():
            if not w.future.done():
                w.future.set_exception(error)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """The connection's events: a dropped connection is an engine that died."""
        from zmq.utils.monitor import parse_monitor_message

        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    self._down("connection to the engine dropped")
        finally:
            monitor.close(linger=0)

    async def _poll_status(self) -> None:
        while True:
            try:
                await self._flush_refused()
                value = await self._call("status", {}, timeout=self.down_after_s)
            except ServeError:
                self._down(f"no status within {self.down_after_s:g} s")
            except Exception:  # a bug of ours must not stop the status from being kept
                SERVER.exception("engine status poll failed")
            else:
                was = self._status
                self._admissions = {
                    task: Admission(wait, floor)
                    for task, (wait, floor) in value["admissions"].items()
                }
                self._status = EngineStatus(
                    True, value["ready"], value["loaded"], value["draining"], value["failed"]
                )
                if self._status.ready and not was.ready:
                    SERVER.info("engine ready", extra={"fields": {"pid": value["pid"]}})
            await asyncio.sleep(self.status_interval_s)

    # -- messages ----------------------------------------------------------------------
    async def _send(self, frames: list[Any]) -> None:
        assert self._socket is not None
        try:
            await self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            if not self._status.up:
                raise EngineUnavailable(ENGINE_DOWN, retry_after_s=1) from None
            raise ServerBusy(
                "the engine's queue to this front end is full; retry after Retry-After",
                retry_after_s=1,
            ) from None

    async def _receive(self) -> None:
        assert self._socket is not None
        while True:
            frames = await self._socket.recv_multipart(copy=False)
            try:
                reply = wire.decode_reply(frames[0].buffer)
                array = None
                if isinstance(reply, wire.Answered):
                    array = wire.array_from(frames[1].buffer, reply.shape, reply.dtype)
            except (wire.MalformedFrame, IndexError) as e:
                SERVER.error("malformed reply from the engine", extra={"fields": {"error": str(e)}})
                continue
            waiting = self._waiting.pop(reply.id, None)
            if waiting is not None and not waiting.future.done():
                waiting.future.set_result((reply, array))

    def _expect(self, id: int) -> asyncio.Future[tuple[wire.Reply, np.ndarray | None]]:
        future: asyncio.Future[tuple[wire.Reply, np.ndarray | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[id] = _Waiting(future, time.perf_counter())
        return future

    async def _call(self, method: wire.Method, args: dict[str, Any], *, timeout: float) -> Any:
        id = self.next_id()
        future = self._expect(id)
        try:
            await self._send([wire.encode(wire.Call(id, method, args))])
            reply, _ = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise EngineUnavailable(
                f"the engine did not answer {method!r} within {timeout:g} s; retry shortly",
                retry_after_s=1,
            ) from None
        finally:
            self._waiting.pop(id, None)
        if isinstance(reply, wire.Failed):
            raise reply.error()
        assert isinstance(reply, wire.Result)
        return reply.value

    async def call(self, method: wire.Method, **args: Any) -> Any:
        if not self._status.up:
            raise EngineUnavailable(ENGINE_DOWN, retry_after_s=1)
        if method == "metrics":
            await self._flush_refused()
        return await self._call(method, args, timeout=self.call_timeout_s)

    async def infer(
        self, request: wire.Infer, inputs: np.ndarray, entry: TaskEntry, budget: Budget | None
    ) -> Answer:
        self._status.check()
        if self.inflight >= self.max_inflight:
            raise ServerBusy(
                f"this front end already has {self.inflight} inference requests at the engine, "
                f"its limit (DVN_MAX_INFLIGHT={self.max_inflight}); retry after Retry-After, "
                "or on another replica",
                retry_after_s=1,
            )
        array = np.ascontiguousarray(inputs, dtype=np.float32)
        header = wire.Infer(
            request.id, request.task, request.budget, request.level, request.on_miss,
            request.elapsed_s, request.request_id, tuple(array.shape), "float32",
        )  # fmt: skip
        future = self._expect(request.id)
        self.inflight += 1
        sent = time.perf_counter()
        try:
            await self._send([wire.encode(header), array.data])
            reply, probs = await future
        except asyncio.CancelledError:
            if request.id in self._abandoned:
                raise ClientDisconnected("client disconnected") from None
            raise
        finally:
            self._abandoned.discard(request.id)
            self.inflight -= 1
            self._waiting.pop(request.id, None)
        if isinstance(reply, wire.Failed):
            raise reply.error()
        assert isinstance(reply, wire.Answered) and probs is not None
        if self.observe_ipc is not None:
            # the round trip's time outside the engine
            self.observe_ipc(max(0.0, time.perf_counter() - sent - reply.engine_s))
        return wire.answer_of(reply, probs, entry, budget)

    def cancel(self, request_id: int) -> None:
        waiting = self._waiting.get(request_id)
        if waiting is None or waiting.future.done():
            return
        self._abandoned.add(request_id)
        waiting.future.cancel()  # its infer() raises ClientDisconnected
        if self._status.up and self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):  # the engine drops it uncomputed
                sent = asyncio.ensure_future(
                    self._socket.send(wire.encode(wire.Cancel(request_id)), flags=zmq.NOBLOCK)
                )
                sent.add_done_callback(lambda f: f.cancelled() or f.exception())

    def refused(self, task: str, error: ServeError) -> None:
        # Counted here and sent in bulk with the next status poll (or before a scrape):
        # refusing stays cheap under overload.
        shed = isinstance(error, BacklogShed)
        self._refused[(task, outcome_of(error), missed_kind(error), shed)] += 1

    def admit(self, task: str, budget: Budget | None, elapsed_s: float = 0.0) -> None:
        # From the last status (at most status_interval_s old): cheap, and the engine
        # checks again when the request arrives.
        admission = self._admissions.get(task)
        refusal = None if admission is None else shed_for(budget, admission, elapsed_s)
        if refusal is not None:
            raise refusal

    async def _flush_refused(self) -> None:
        if not self._refused or not self._status.up:
            return
        counts = [(t, o, m, shed, n) for (t, o, m, shed), n in self._refused.items()]
        self._refused.clear()
        with contextlib.suppress(ServeError):
            await self._send([wire.encode(wire.Refused(counts))])
