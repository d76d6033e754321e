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

The executor is not the only part that saturates: on a CPU the event loop (HTTP, decoding)
does first, and a forward slows down when the cores are busy, which no profile figure
shows. So the budgets themselves are watched too (``Attainment``): while more of the recent
latency budgets were missed than ``break_even_miss_share`` (the share at which serving
every budgeted request at level 1 would have scored as much even had all of them gone to
the top level), budgeted traffic stays at level 1 as well. Level 1 missing as many keeps it
there (overload: the fastest level misses least); once it misses fewer, every level opens
again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.engine.pending import Clock
from server.engine.profile import LatencyProfile

# Executor time per second the ceiling allows: headroom for bursts (Poisson arrivals) and
# for forwards slowed by the web stack sharing the cores.
TARGET_BUSY = 0.7


@dataclass
class EventRate:
    """Events (examples, answers) a second: an exponentially decaying count with time
    constant ``tau_s``."""

    tau_s: float = 0.5
    clock: Clock = time.perf_counter
    _rate: float = 0.0
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._at = self.clock()

    def add(self, events: int, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._rate = self.per_s(now) + events / self.tau_s
        self._at = now

    def per_s(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return self._rate * math.exp(-max(0.0, now - self._at) / self.tau_s)


@dataclass
class Attainment:
    """Latency budgets met and missed lately (answered in time; answered late, timed out in
    a queue or shed), as decaying counts with time constant ``tau_s``."""

    tau_s: float = 1.0
    min_events: int = 20  # fewer in the last time constant: too few to say anything
    clock: Clock = time.perf_counter
    _met: EventRate = field(init=False)
    _missed: EventRate = field(init=False)

    def __post_init__(self) -> None:
        self._met = EventRate(self.tau_s, self.clock)
        self._missed = EventRate(self.tau_s, self.clock)

    def record(self, met: bool, now: float | None = None, n: int = 1) -> None:
        (self._met if met else self._missed).add(n, now)

    def missed_share(self, now: float | None = None) -> float:
        """The share of recent latency budgets missed (0 with too few to tell)."""
        met, missed = self._met.per_s(now), self._missed.per_s(now)
        if (met + missed) * self.tau_s < self.min_events:
            return 0.0
        return missed / (met + missed)


def break_even_miss_share(accuracies: Sequence[float | None]) -> float:
    """The miss share past which level 1 alone (accuracy ``a1``, the first) scores at least
    what any mix of levels can (at most the top accuracy ``a_top`` for each budget met):
    ``(a_top - a1) / a_top``. 0.05 where an accuracy is not recorded."""
    known = [a for a in accuracies if a is not None]
    if not known or len(known) < len(accuracies) or max(known) <= 0:
        return 0.05
    return (max(known) - known[0]) / max(known)


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
