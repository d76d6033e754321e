"""What the batcher holds and hands back: a request waiting in a level queue, what it
gets back from its batch, and the facts of one finished forward."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from server.engine.profile import LevelKey
from server.engine.selection import OnMiss, Reason

# Seconds on a monotonic scale: time.perf_counter in the server, a clock a test drives in
# tests. Every engine component that reads the time takes one (Engine, Batcher, Pending,
# EventRate), so that they agree with each other and a test never sleeps.
Clock = Callable[[], float]


@dataclass(frozen=True)
class BatchResult:
    """What one request gets back from its batch."""

    probabilities: np.ndarray  # (examples, classes)
    level: int
    reason: Reason
    queue_wait_s: float
    compute_s: float
    batch_examples: int


@dataclass(eq=False)
class Pending:
    """A request waiting in a level queue."""

    task: str
    task_index: int
    level: int
    reason: Reason
    inputs: np.ndarray  # (B, C, H, W) float32
    deadline: float | None  # on ``clock``, None without a latency budget
    on_miss: OnMiss
    future: asyncio.Future[BatchResult]
    clock: Clock = time.perf_counter
    enqueued: float = field(init=False)  # on ``clock``, when built
    abandoned: bool = False  # the client went away

    def __post_init__(self) -> None:
        self.enqueued = self.clock()

    @property
    def examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def key(self) -> LevelKey:
        return (self.task, self.level)


@dataclass
class BatchEvent:
    """Facts about one finished forward, for metrics and the profile."""

    task: str
    level: int
    examples: int
    seconds: float
    failed: bool
