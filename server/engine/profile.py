"""Latency profile: forward time of every (task, level) at each batch size on this device,
measured at start-up and kept current from observed batches; and the predicted time to
answer a new request given what is queued ahead of it."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

LevelKey = tuple[str, int]  # (task, level)


@dataclass
class LatencyProfile:
    """Seconds per forward, by (task, level) and batch size. Updated in the event loop only."""

    table: dict[LevelKey, dict[int, float]] = field(default_factory=dict)
    smoothing: float = 0.2  # weight of a new observation
    # One observation counts as at most this many times the estimate (or 1/this): a forward
    # preempted on a busy machine can take 50 times its usual time once, and one such
    # sample must not make a level look unusable (selection would move everything off it).
    max_step: float = 4.0

    def record(self, key: LevelKey, batch: int, seconds: float) -> None:
        """Blend an observed forward time into the profile: the observation, clamped to
        within ``max_step`` times the current estimate, gets weight ``smoothing``. A batch
        size not in the profile starts from the estimate the profile gives for it
        (interpolated), so one sample does not define it; a level not in the profile
        starts at the observation."""
        row = self.table.setdefault(key, {})
        old = row.get(batch)
        if old is None:
            if not row:
                row[batch] = seconds
                return
            old = self.forward_s(key, batch)
        if old > 0:
            seconds = min(max(seconds, old / self.max_step), old * self.max_step)
        row[batch] = (1 - self.smoothing) * old + self.smoothing * seconds

    def forward_s(self, key: LevelKey, batch: int) -> float:
        """Predicted seconds for one forward of ``batch`` examples (linear between measured
        sizes, per-example rate of the largest one beyond it)."""
        row = self.table.get(key)
        if not row:
            return 0.0
        seconds = row.get(batch)
        if seconds is not None:  # the common case: a measured size, asked per request
            return seconds
        sizes = sorted(row)  # a handful of sizes; only for sizes never measured
        i = bisect.bisect_left(sizes, batch)
        if i == 0:
            return row[sizes[0]]
        if i == len(sizes):
            top = sizes[-1]
            return row[top] * batch / top
        lo, hi = sizes[i - 1], sizes[i]
        frac = (batch - lo) / (hi - lo)
        return row[lo] + frac * (row[hi] - row[lo])

    def work_s(self, key: LevelKey, examples: int, max_batch: int) -> float:
        """Seconds to compute ``examples`` queued at one level, in batches of ``max_batch``."""
        if examples <= 0:
            return 0.0
        full, rest = divmod(examples, max_batch)
        return full * self.forward_s(key, max_batch) + (self.forward_s(key, rest) if rest else 0.0)

    def snapshot(self) -> dict[LevelKey, dict[int, float]]:
        return {k: dict(v) for k, v in self.table.items()}


@dataclass
class Pace:
    """How fast forwards run now against what the start-up profile predicted for them: 1.0
    as measured at start-up, 3.0 three times slower (a throttled device, a busy neighbour, a
    slowed replica), in any level. Sums decayed by ``decay`` a batch, so the last few dozen
    batches count; and the evidence fades with time (``half_life_s`` on ``clock``): a replica
    sent nothing drifts back to 1.0, so a router tries a recovered replica again, and its
    next batches say whether it is still slow."""

    startup: LatencyProfile = field(default_factory=LatencyProfile)
    decay: float = 0.9
    half_life_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    observed_s: float = 0.0
    expected_s: float = 0.0
    last_s: float | None = None  # when the sums were last brought up to date

    def record(self, key: LevelKey, batch: int, seconds: float) -> None:
        expected = self.startup.forward_s(key, batch)
        if expected > 0:
            now = self.clock()
            # The faded pace, rebased on the expected sum, then this batch added.
            self.observed_s = self.decay * self.expected_s * self._at(now) + seconds
            self.expected_s = self.decay * self.expected_s + expected
            self.last_s = now

    @property
    def ratio(self) -> float:
        return self._at(self.clock())

    def _at(self, now: float) -> float:
        if self.expected_s <= 0 or self.last_s is None:
            return 1.0
        faded = math.exp(-math.log(2) * max(0.0, now - self.last_s) / self.half_life_s)
        return 1.0 + (self.observed_s / self.expected_s - 1.0) * faded


@dataclass(frozen=True)
class QueueState:
    """What is ahead of a new request: the batch running now and the queued examples."""

    busy_remaining_s: float
    queued: Mapping[LevelKey, int]


def predict_latency(
    profile: LatencyProfile,
    state: QueueState,
    key: LevelKey,
    examples: int,
    max_batch: int,
    overhead_s: float = 0.0,
) -> float:
    """Predicted seconds from arrival to response for ``examples`` at ``key``: the running
    batch, every other queue's backlog, this level's backlog plus the request itself, and
    the fixed per-request overhead. One executor serves the queues earliest deadline first;
    the prediction assumes the request waits for all of it (an upper bound for a tight
    deadline, which may go ahead of looser ones)."""
    ahead = state.busy_remaining_s + sum(
        profile.work_s(k, n, max_batch) for k, n in state.queued.items() if k != key and n > 0
    )
    own = profile.work_s(key, state.queued.get(key, 0) + examples, max_batch)
    return overhead_s + ahead + own


def profile_batch_sizes(max_batch: int) -> list[int]:
    """Batch sizes measured at start-up: powers of two up to ``max_batch``, and it."""
    sizes = [2**i for i in range(int(math.log2(max_batch)) + 1)]
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes
