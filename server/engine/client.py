"""One engine client API, in process and across processes (vLLM's ``EngineCoreClient``
with its in-process and multi-process variants). Front ends import this module, never the
engine's: it needs no torch.

- :class:`~server.engine.inproc.InprocClient` runs the engine in the front end's own event loop: tests,
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

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine import wire
from server.engine.outcome import Answer
from server.errors import (
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
