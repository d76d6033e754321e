"""Every error the server answers with, one JSON shape for all:
``{"error": {"type": ..., "message": ...}}``.

Hierarchy (status in brackets)::

    ServeError
    ├── InvalidInput [400]            body undecodable, wrong shape/dtype, NaN, empty, too big a batch
    ├── Unauthorized [401]            API keys on, none given
    ├── Forbidden [403]               wrong API key
    ├── UnknownTask [404]
    ├── NotFound [404]                no such route
    ├── MethodNotAllowed [405]
    ├── PayloadTooLarge [413]
    ├── UnsupportedMediaType [415]
    ├── InvalidBudget [422]           budget grammar
    ├── BudgetUnsatisfiable [422]     memory budget below the smallest level
    ├── InvalidParameter [422]        level, on_miss, top_k
    ├── QueueFull [429]               with Retry-After
    ├── ServerBusy [429]              max_inflight requests already handled; Retry-After
    ├── InferenceFailed [500]         the batch failed; only its requests
    ├── DeadlineUnmeetable [503]      latency budget no level meets, on_miss=reject; Retry-After
    ├── NotReady [503]                warming up or draining; Retry-After
    ├── EngineUnavailable [503]       the engine process is down or restarting; Retry-After
    └── DeadlineExceeded [504]        deadline passed while queued (any on_miss), or its level
                                      would answer too late (on_miss=reject)
"""

from __future__ import annotations

import math
from typing import ClassVar


class ServeError(Exception):
    """Base: a status, a machine-readable type and a message that says how to fix it."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"type": self.type, "message": self.message}}

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        # Retry-After takes whole seconds (RFC 9110); never 0, which invites a hot loop.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class InvalidInput(ServeError):
    status, type = 400, "invalid_input"


class Unauthorized(ServeError):
    status, type = 401, "unauthorized"


class Forbidden(ServeError):
    status, type = 403, "forbidden"


class UnknownTask(ServeError):
    status, type = 404, "unknown_task"


class NotFound(ServeError):
    status, type = 404, "not_found"


class MethodNotAllowed(ServeError):
    status, type = 405, "method_not_allowed"


class PayloadTooLarge(ServeError):
    status, type = 413, "payload_too_large"


class UnsupportedMediaType(ServeError):
    status, type = 415, "unsupported_media_type"


class InvalidBudget(ServeError):
    status, type = 422, "invalid_budget"


class BudgetUnsatisfiable(ServeError):
    status, type = 422, "budget_unsatisfiable"


class InvalidParameter(ServeError):
    status, type = 422, "invalid_parameter"


class QueueFull(ServeError):
    status, type = 429, "queue_full"


class ServerBusy(ServeError):
    status, type = 429, "server_busy"


class BacklogShed(ServerBusy):
    """A :class:`ServerBusy` for a latency budget the backlog would outlast (same type on
    the wire; the engine counts it as a missed budget)."""


class InferenceFailed(ServeError):
    status, type = 500, "inference_failed"


class DeadlineUnmeetable(ServeError):
    status, type = 503, "deadline_unmeetable"


class NotReady(ServeError):
    status, type = 503, "not_ready"


class EngineUnavailable(ServeError):
    status, type = 503, "engine_unavailable"


class DeadlineExceeded(ServeError):
    status, type = 504, "deadline_exceeded"


def shutting_down(probe: bool = False) -> NotReady:
    """The 503 of a draining server (``probe``: the shorter words of ``/readyz``)."""
    message = (
        "the server is draining"
        if probe
        else ("the server is shutting down; retry on another replica")
    )
    return NotReady(message, retry_after_s=1)


def too_many_inflight(inflight: int, limit: int) -> ServerBusy:
    """The 429 of a server already handling ``limit`` requests (DVN_MAX_INFLIGHT)."""
    return ServerBusy(
        f"the server is already handling {inflight} inference requests, its limit "
        f"(DVN_MAX_INFLIGHT={limit}); retry after Retry-After, or on another replica",
        retry_after_s=1,
    )


ALL_ERRORS: tuple[type[ServeError], ...] = (
    InvalidInput,
    Unauthorized,
    Forbidden,
    UnknownTask,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidBudget,
    BudgetUnsatisfiable,
    InvalidParameter,
    QueueFull,
    ServerBusy,
    InferenceFailed,
    DeadlineUnmeetable,
    NotReady,
    EngineUnavailable,
    DeadlineExceeded,
)
BY_TYPE: dict[str, type[ServeError]] = {e.type: e for e in ALL_ERRORS}
