"""Keeping the executor's work per second under its capacity: the arrival rate, and the
levels a task's budgeted traffic may use at that rate.

Selection per request sees only the queues of the moment; under sustained load that lets
requests choose a level the executor cannot keep up with at that rate, the queues grow,
and budgets pass in them. The ceiling looks at the rate instead: with ``rate`` examples a
second arriving and batches of about ``batch`` examples, level ``L`` costs
``rate * forward_s(L, batch) / batch`` seconds of executor time per second. While the top
level's cost is under ``target`` every level is open; past it the task's whole budgeted
traffic moves to the smallest level. Not to the largest level under the target: the
tightest budgets would still need a smaller one, and every level in use is a queue of its
own, so the batches would split (measured on a 2-core CPU at 94% load: a level-1/level-2
mix met fewer budgets of every size than level 1 alone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.profile import LatencyProfile

# Executor time per second the ceiling allows: headroom for bursts (Poisson arrivals) and
# for forwards slowed by the web stack sharing the cores.
TARGET_BUSY = 0.7
# A request is refused up front when the backlog in flight is expected to take this many
# times its latency budget (that backlog is a mean: some requests get through faster).
SHED_FACTOR = 4.0


@dataclass
class EventRate:
    """Events (examples, answers) a second: an exponentially decaying count with time
    constant ``tau_s``."""

    tau_s: float = 0.5
    _rate: float = 0.0
    _at: float = field(default_factory=time.perf_counter)

    def add(self, events: int, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._rate = self.per_s(now) + events / self.tau_s
        self._at = now

    def per_s(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        return self._rate * math.exp(-max(0.0, now - self._at) / self.tau_s)


def budgeted_ceiling(
    profile: LatencyProfile,
    task: str,
    levels: Sequence[int],
    rate_per_s: float,
    batch: int,
    target: float,
) -> int:
    """The largest level budgeted requests may use now: the top level while its executor
    time per second at ``rate_per_s`` examples a second, in batches of ``batch``, is at
    most ``target``; else the smallest (see the module's docstring)."""
    top, batch = max(levels), max(1, batch)
    busy = rate_per_s * profile.forward_s((task, top), batch) / batch
    return top if busy <= target else min(levels)


def backlog_seconds(in_flight: int, finished: EventRate, batch: int) -> float:
    """How long ``in_flight`` requests are expected to take to get through at the rate
    ``finished`` (Little's law); 0 unless more are in flight than one batch answers and the
    flow is steady enough to measure (a batch's worth finished in the last time constant):
    then the queues' own predictions decide (503 or 504 with the reason)."""
    rate = finished.per_s()
    if in_flight > batch and rate * finished.tau_s >= batch:
        return in_flight / rate
    return 0.0
