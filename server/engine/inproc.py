"""The engine in the front end's own process (``dvn serve --workers 0``, tests, debugging):
:class:`InprocClient`, and the engine's side of the non-inference calls, which the engine
process and Ray replicas answer with too (:func:`call_engine_async`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import generate_latest

from model_store.manifest import TaskEntry
from server.budget import Budget
from server.engine import catalog, wire
from server.engine.admission import shed_for
from server.engine.client import EngineClient, EngineStatus
from server.engine.outcome import Answer, missed_kind, outcome_of
from server.engine.runtime import Runtime, engine_status
from server.errors import BacklogShed, NotReady, ServeError


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
