"""What the batcher holds and hands back: a request waiting in a level queue, what it
gets back from its batch, and the facts of one finished forward."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from server.engine.profile import LevelKey
from server.engine.selection import OnMiss, Reason


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
    deadline: float | None  # perf_counter time, None without a latency budget
    on_miss: OnMiss
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # the client went away

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
    express: bool = False  # ran on the express lane
