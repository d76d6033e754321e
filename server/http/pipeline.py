"""The one inference request path of every front end: ``/infer`` (v1) and
``/v2/models/{task}/infer`` (Open Inference Protocol) differ only in how they read a
request (:data:`Reader`) and write an answer; readiness, the in-flight bound, accounting of
refusals, the engine call and client disconnects are here, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from model_store.manifest import TaskEntry
from server.budget import Budget
from server.engine import wire
from server.engine.outcome import Answer, ClientDisconnected
from server.errors import DeadlineExceeded, PayloadTooLarge, ServeError
from server.http.frontend import FrontEnd


@dataclass(frozen=True)
class Parsed:
    """What a protocol read from one request: checked, decoded, ready for the engine."""

    budget_spec: str | None
    budget: Budget | None
    level: int | None
    on_miss: str
    inputs: np.ndarray  # (B, C, H, W) float32 in model space


# (the task, the front end) -> the request's parameters and inputs; raises ServeError
Reader = Callable[[TaskEntry, FrontEnd], Awaitable[Parsed]]


def elapsed(request: Request) -> float:
    """Seconds since the request arrived (``RequestContext``'s stamp)."""
    arrival: float = request.scope.get("state", {}).get("arrival", time.perf_counter())
    return time.perf_counter() - arrival


def frontend(request: Request) -> FrontEnd:
    fe: FrontEnd = request.app.state.frontend
    return fe


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared} bytes is over the {limit}-byte limit; send fewer examples per "
            "request (or raise DVN_MAX_BODY_BYTES)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"body is over the {limit}-byte limit; send fewer examples per request "
                "(or raise DVN_MAX_BODY_BYTES)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def infer(request: Request, task: str, read: Reader) -> Answer:
    """Answer one inference request, whatever its protocol.

    Raises:
        ServeError: every refusal and failure, typed (counted in the engine's metrics).
        ClientDisconnected: the client went away before its answer (dropped uncomputed).
    """
    fe = frontend(request)
    state = request.scope.setdefault("state", {})
    arrival: float = state.get("arrival", time.perf_counter())
    log: dict[str, Any] = state.setdefault("log", {})
    try:
        fe.check_ready()
        fe.check_inflight()
        fe.inflight += 1
    except ServeError as e:
        fe.client.refused(task, e)
        log.update(outcome=e.type)
        raise
    began_with = fe.inflight
    try:
        answer = await _infer(request, fe, task, read, arrival, log)
    except DeadlineExceeded:
        fe.answered(time.perf_counter() - arrival, began_with)  # late: the limit must learn
        raise
    finally:
        fe.inflight -= 1
    fe.answered(time.perf_counter() - arrival, began_with)
    return answer


async def _infer(
    request: Request, fe: FrontEnd, task: str, read: Reader, arrival: float, log: dict[str, Any]
) -> Answer:
    try:
        entry = fe.task(task)
        parsed = await read(entry, fe)
    except ServeError as e:
        fe.client.refused(task, e)
        log.update(outcome=e.type)
        raise
    message = wire.Infer(
        id=fe.client.next_id(),
        task=task,
        budget=parsed.budget_spec,
        level=parsed.level,
        on_miss=parsed.on_miss,
        elapsed_s=time.perf_counter() - arrival,
        request_id=state_id(request),
        shape=tuple(parsed.inputs.shape),
        dtype="float32",
    )
    watcher = asyncio.ensure_future(wait_disconnect(request))

    def gone(_: asyncio.Future[None]) -> None:
        if watcher.cancelled():
            return
        watcher.exception()  # retrieved: a failed receive() means the client is gone too
        fe.client.cancel(message.id)

    # A callback, not asyncio.wait over both: no extra future and set per request.
    watcher.add_done_callback(gone)
    try:
        answer = await fe.client.infer(message, parsed.inputs, entry, parsed.budget)
    except ServeError as e:
        log.update(outcome=e.type)
        raise
    except ClientDisconnected:
        log.update(outcome="client_disconnected")
        raise
    finally:
        watcher.cancel()
    log.update(
        level=answer.level, outcome="ok", selection=answer.reason, budget_met=answer.budget_met
    )
    return answer


def state_id(request: Request) -> str:
    rid: str = request.scope.get("state", {}).get("request_id", "")
    return rid
