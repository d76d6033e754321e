"""The multi-process engine client: a front end's connection to the engine process over
ZMQ (``server.engine.process``): a DEALER socket per front end, msgspec headers, arrays as
zero-copy frames. It bounds the requests it has in flight, fails every request in flight
with 503 ``engine_unavailable`` as soon as the engine's connection drops or its status stops
answering, and keeps the engine's status (ready, draining, admission figures) current for
the front end's readiness and admission."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine import wire
from server.engine.admission import Admission, shed_for
from server.engine.client import ENGINE_DOWN, EngineStatus
from server.engine.outcome import Answer, ClientDisconnected
from server.engine.remote import RefusedCounts, RemoteClient
from server.errors import EngineUnavailable, ServeError, ServerBusy
from server.logs import SERVER


@dataclass
class _Waiting:
    future: asyncio.Future[tuple[wire.Reply, np.ndarray | None]]
    sent: float


class MPClient(RemoteClient):
    """A front end's connection to the engine process at ``address``.

    ``max_inflight`` bounds the inference requests this front end has at the engine: past
    it, 429 ``server_busy`` at once (the engine is never sent more than it was allowed, so
    ZMQ's high-water mark is never where a request is dropped). ``status_interval_s``: how
    often the engine's status is asked. An engine whose connection drops is down at once (a
    dead process); one that does not answer its status within ``down_after_s`` is down too
    (a hung one): long enough that a busy engine on a loaded machine is not taken for dead.
    """

    INFLIGHT_LIMIT = (
        "this front end already has {inflight} inference requests at the engine, its limit "
        "(DVN_MAX_INFLIGHT={limit}); retry after Retry-After, or on another replica"
    )

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
        super().__init__(
            manifest,
            specs,
            max_inflight=max_inflight,
            status_interval_s=status_interval_s,
            down_after_s=down_after_s,
            call_timeout_s=call_timeout_s,
        )
        self.address = address
        self._waiting: dict[int, _Waiting] = {}
        self._abandoned: set[int] = set()  # cancelled by their clients
        self._admissions: dict[str, Admission] = {}  # the engine's, as of its last status
        self._admissions_at = 0.0  # when that status was received
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
        self._closing = True
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
            self._socket = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # -- status --------------------------------------------------------------------------
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
        while not self._closing:
            try:
                await self._flush_refused()
                self._reported(await self._call_within("status", {}, self.down_after_s))
            except ServeError:
                self._down(f"no status within {self.down_after_s:g} s")
            except Exception:  # a bug of ours must not stop the status from being kept
                SERVER.exception("engine status poll failed")
            await asyncio.sleep(self.status_interval_s)

    def _reported(self, value: dict[str, Any]) -> None:
        was = self._status
        self._admissions = {
            task: Admission(wait, floor) for task, (wait, floor) in value["admissions"].items()
        }
        self._admissions_at = time.perf_counter()
        self._status = EngineStatus.reported(value)
        if self._status.ready and not was.ready:
            SERVER.info("engine ready", extra={"fields": {"pid": value["pid"]}})

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

    async def _call(self, method: wire.Method, args: dict[str, Any]) -> Any:
        return await self._call_within(method, args, self.call_timeout_s)

    async def _call_within(self, method: wire.Method, args: dict[str, Any], timeout: float) -> Any:
        id = self.next_id()
        future = self._expect(id)
        try:
            await self._send([wire.encode(wire.Call(id, method, args))])
            # Not asyncio.wait_for: on Python 3.11 it returns a reply that lands in the
            # same turn as a cancel and drops the cancel, so close() never ended the poll.
            async with asyncio.timeout(timeout):
                reply, _ = await future
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

    async def infer(
        self, request: wire.Infer, inputs: np.ndarray, entry: TaskEntry, budget: Budget | None
    ) -> Answer:
        self._status.check()
        self._take_slot()
        array = np.ascontiguousarray(inputs, dtype=np.float32)
        header = self._header(request, array)
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
        return self._answer(reply, probs, sent, entry, budget)

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

    def admit(self, task: str, budget: Budget | None, elapsed_s: float = 0.0) -> None:
        # From the last status (at most status_interval_s old): cheap, and the engine
        # checks again when the request arrives.
        admission = self._admissions.get(task)
        if admission is None:
            return
        # The engine has worked through the queues since: an old report's wait, less its
        # age (never below an idle engine's), so a stale report does not refuse a request
        # an engine that has caught up would answer in time.
        age = time.perf_counter() - self._admissions_at
        fresh = Admission(max(admission.floor_s, admission.wait_s - age), admission.floor_s)
        refusal = shed_for(budget, fresh, elapsed_s)
        if refusal is not None:
            raise refusal

    async def _send_refused(self, counts: RefusedCounts) -> None:
        with contextlib.suppress(ServeError):
            await self._send([wire.encode(wire.Refused(counts))])
