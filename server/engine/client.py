"""One engine client API, in process and across processes (vLLM's ``EngineCoreClient``
with its in-process and multi-process variants).

- :class:`InprocClient` runs the engine in the front end's own event loop: tests,
  ``dvn serve --workers 0``, debugging.
- :class:`~server.engine.mp_client.MPClient` talks to an engine process over ZMQ
  (``server.engine.process``); ``server.ray.client.RayEngineClient`` to Ray Serve replicas;
  both on :class:`~server.engine.remote.RemoteClient` (status, in-flight bound, refusal
  counts, answers).

All raise :class:`~server.errors.ServeError` for every failure and return
:class:`~server.engine.outcome.Answer` for an answered request.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import generate_latest

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine import catalog, wire
from server.engine.admission import shed_for
from server.engine.outcome import Answer, missed_kind, outcome_of
from server.engine.runtime import Runtime, engine_status
from server.errors import (
    BacklogShed,
    EngineUnavailable,
    NotReady,
    ServeError,
    shutting_down,
)

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

    @classmethod
    def reported(cls, status: Mapping[str, Any]) -> EngineStatus:
        """The status of an engine that answered with ``status`` (``engine_status``)."""
        return cls(True, status["ready"], status["loaded"], status["draining"], status["failed"])

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
        (``elapsed_s`` of it spent already) the engine's queues would make it miss (:func:`~server.engine.admission.shed_for`; the
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
        return catalog.plan(
            service, args["task"], args["budget"], args["on_miss"], args["examples"]
        )
    if method == "models":
        return catalog.summary(service)
    if method == "export_level":
        return catalog.export_level(service, args["task"], args["budget"])
    raise ValueError(f"no engine method {method!r}")


async def call_engine_async(runtime: Runtime, method: str, args: dict[str, Any]) -> Any:
    if method == "archive":
        if runtime.service is None:
            raise NotReady("the server is loading the checkpoint; retry shortly", retry_after_s=1)
        return await catalog.archive(runtime.service, args["task"], args["level"])
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
        return EngineStatus.reported(engine_status(self.runtime))

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
