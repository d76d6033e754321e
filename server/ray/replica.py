"""``DVNEngine``: one engine replica of the Ray Serve application, one per device.

A replica holds a :class:`~server.engine.runtime.Runtime` (the checkpoint's weights, the
:class:`~server.engine.core.Engine` with its own budget-aware batcher) and answers the
ingress's :class:`~server.ray.client.RayEngineClient` with the engine's IPC messages
(:mod:`server.engine.wire`): the same headers, replies and typed errors as the ZMQ engine
process, carried by Ray instead of ZMQ. Its constructor returns once warm-up is done, so
Ray routes nothing to a replica that is not ready; its destructor (Ray's graceful
shutdown, e.g. on scale-down) drains it.

Ray imports nothing here: the class is plain, made a deployment by
:func:`server.ray.app.engine_deployment`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
from prometheus_client import generate_latest

from server.engine import wire
from server.engine.inproc import call_engine_async
from server.engine.runtime import ForwardWrapper, Runtime, engine_status
from server.errors import NotReady, ServeError
from server.logs import SERVER, configure_logging
from server.settings import Settings


def replica_name() -> str:
    """This replica's id in Ray Serve (the ``replica`` label), or the pid outside Ray."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not in a Serve replica (tests of the class itself)
        return f"pid-{os.getpid()}"


class DVNEngine:
    """The engine of one device behind a Ray Serve deployment.

    ``settings``: the server's :class:`~server.settings.Settings` as JSON (every replica the
    same). ``forward_wrapper`` wraps the forward, as in ``create_app`` (tests inject faults
    and delays with it). ``ready_timeout_s`` bounds warm-up: past it, or when warm-up fails,
    the constructor raises and Ray starts another replica.
    """

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        settings: str,
        forward_wrapper: ForwardWrapper | None = None,
        ready_timeout_s: float = 300.0,
    ) -> None:
        parsed = Settings.model_validate_json(settings)
        configure_logging(parsed.log_level, parsed.log_json)
        self.name = replica_name()
        self.runtime = Runtime(settings=parsed, forward_wrapper=forward_wrapper)
        await self.runtime.start()
        deadline = time.monotonic() + ready_timeout_s
        while not self.runtime.ready:
            if self.runtime.failed is not None:
                raise RuntimeError(f"replica warm-up failed: {self.runtime.failed}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica not warmed up within {ready_timeout_s:g} s")
            await asyncio.sleep(0.05)
        SERVER.info("replica ready", extra={"fields": {"replica": self.name}})

    async def infer(self, task: str, header: bytes, inputs: np.ndarray) -> tuple[bytes, Any]:
        """Answer one :class:`~server.engine.wire.Infer` (``header``) for ``inputs``.

        ``task`` repeats the header's task for the request router, which reads the call's
        arguments. Returns the encoded reply (``Answered`` or ``Failed``) and, when
        answered, the probabilities (else None). A cancelled call (the client went away)
        drops the request uncomputed if it still waits."""
        received = time.perf_counter()
        message = wire.decode_request(header)
        if not isinstance(message, wire.Infer):
            raise TypeError(f"infer expects a wire.Infer header, got {type(message).__name__}")
        service = self.runtime.service
        key = (message.request_id, message.id)
        try:
            if service is None or not self.runtime.ready:
                raise NotReady("the replica is not ready; retry shortly", retry_after_s=1)
            answer = await service.infer(message, inputs, key=key)
        except ServeError as e:
            return wire.encode(wire.failed(message.id, e)), None
        except asyncio.CancelledError:
            if service is not None:
                service.cancel(key)
            raise
        except Exception as e:  # a bug of ours: a 500 for this request, the replica goes on
            SERVER.exception("replica failed a request")
            error = ServeError(f"internal error in the engine ({type(e).__name__})")
            return wire.encode(wire.failed(message.id, error)), None
        reply, probs = wire.answered(message.id, answer, time.perf_counter() - received)
        return wire.encode(reply), probs

    async def call(self, method: wire.Method, args: dict[str, Any]) -> bytes:
        """A :class:`~server.engine.wire.Call`'s value: an encoded ``Result`` or ``Failed``."""
        try:
            value = await call_engine_async(self.runtime, method, args)
            reply: wire.Reply = wire.Result(0, value)
        except ServeError as e:
            reply = wire.failed(0, e)
        return wire.encode(reply)

    def metrics(self, replica: str | None = None) -> tuple[str, bytes]:
        """This replica's registry as Prometheus text, with its name (``replica``: the name
        the call was routed by)."""
        return self.name, generate_latest(self.runtime.metrics.registry)

    def status(self) -> dict[str, Any]:
        """:func:`~server.engine.runtime.engine_status`, with this replica's name."""
        return {**engine_status(self.runtime), "replica": self.name}

    def count_refused(self, counts: list[tuple[str, str, str | None, bool, int]]) -> None:
        """Count requests the ingress refused before they reached any replica."""
        if self.runtime.service is not None:
            for task, outcome, missed, shed, n in counts:
                self.runtime.service.count_refused(task, outcome, missed, n, shed)

    def record_routing_stats(self) -> dict[str, Any]:
        """What the request router weighs (Ray calls this every
        ``request_routing_stats_period_s``): when, whether ready, requests in flight, and
        per task the earliest answer a new request could get here (``wait_s``) and on an
        idle replica (``floor_s``), and how fast its forwards run now against its start-up
        profile (``pace``, :class:`~server.engine.profile.Pace`)."""
        status = engine_status(self.runtime)
        service = self.runtime.service
        return {
            "at": time.time(),
            "ready": status["ready"],
            "inflight": 0 if service is None else service.inflight,
            "admissions": status["admissions"],
            "pace": 1.0 if service is None else service.pace.ratio,
        }

    def check_health(self) -> None:
        """Ray's health check: a replica whose warm-up failed is restarted."""
        if self.runtime.failed is not None:
            raise RuntimeError(f"warm-up failed: {self.runtime.failed}")

    async def __del__(self) -> None:
        # Ray's graceful shutdown (scale-down, redeploy, serve shutdown): answer what was
        # accepted, within DVN_DRAIN_TIMEOUT_S (set graceful_shutdown_timeout_s above it).
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            await runtime.stop()
