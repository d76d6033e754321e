"""What one request carries through the engine: its answer, how its handling is accounted,
and how an error counts in the metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from model_store.manifest import TaskEntry
from server.budget import Budget
from server.errors import BudgetUnsatisfiable, DeadlineExceeded, DeadlineUnmeetable, ServeError


@dataclass(frozen=True)
class Answer:
    """A request's result, ready for either front end to encode."""

    task: TaskEntry
    level: int
    units: list[int]
    reason: str
    probabilities: np.ndarray  # (examples, classes)
    budget: Budget | None
    latency_met: bool | None
    memory_met: bool | None
    predicted_latency_s: float
    measured_latency_s: float
    queue_wait_s: float
    compute_s: float

    @property
    def budget_met(self) -> bool | None:
        if self.budget is None:
            return None
        return self.latency_met is not False and self.memory_met is not False


class ClientDisconnected(asyncio.CancelledError):
    """The client went away while its request waited: dropped uncomputed. A CancelledError,
    so code that does not know it treats it as a cancellation."""


@dataclass
class Handling:
    """One request as the engine handles it: what :meth:`Engine.handling` needs to account
    for it. ``examples`` is set once the inputs are checked, ``answer`` once answered."""

    examples: int = 0
    answer: Answer | None = None


def outcome_of(error: ServeError) -> str:
    """Metrics outcome of an error: the client's mistake, load shedding, or ours."""
    if error.status >= 500 and error.status not in (503, 504):
        return "error"
    if error.status in (429, 503, 504):
        return "rejected"
    return "invalid"


def missed_kind(error: ServeError) -> str | None:
    """The budget kind an error refused a request for, if any."""
    if isinstance(error, DeadlineUnmeetable | DeadlineExceeded):
        return "latency"
    if isinstance(error, BudgetUnsatisfiable):
        return "memory"
    return None
