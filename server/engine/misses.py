"""How far off the latency predictions have been lately, as the chance that a request
predicted to take ``p`` seconds answers within a budget ``b``.

The profile predicts the executor's share of a request (the queues ahead, the forward)
plus a smoothed per-request overhead. What it cannot see, the event loop's own queue on a
busy machine, the wake-up of a batch's requests one after another, a forward preempted by
another process, shows up as the error ``measured - predicted`` of answered requests. Its
recent distribution turns a prediction into a probability of meeting the budget, which
selection weighs against each level's accuracy (``server.engine.selection``). A request whose
deadline passed in a queue (504, never answered) counts as an error just over its margin:
all that is known is that it missed. Errors older than ``max_age_s`` are forgotten: a level
that selection stopped choosing after a bad spell would otherwise keep that spell's chance
for ever (no new answers at that level to replace it); once too few are left, its
predictions are trusted again and new answers show whether they should be.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class PredictionErrors:
    """The last ``window`` errors (seconds, measured minus predicted) of the last
    ``max_age_s`` seconds, sorted for lookups. ``now`` arguments are ``time.monotonic()``
    readings (default: the current one)."""

    window: int = 256
    min_samples: int = 32  # fewer than this: no evidence yet, every prediction is trusted
    max_age_s: float = 5.0
    _order: deque[tuple[float, float]] = field(default_factory=deque)  # (when, error)
    _sorted: list[float] = field(default_factory=list)

    def record(self, error_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._order.append((now, error_s))
        bisect.insort(self._sorted, error_s)
        if len(self._order) > self.window:
            self._drop_oldest()
        self._expire(now)

    def missed(self, margin_s: float, now: float | None = None) -> None:
        """A request with ``margin_s`` (budget minus prediction) that missed unanswered."""
        self.record(margin_s + 1e-6, now)

    def _drop_oldest(self) -> None:
        _, oldest = self._order.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def _expire(self, now: float | None) -> None:
        now = time.monotonic() if now is None else now
        while self._order and now - self._order[0][0] > self.max_age_s:
            self._drop_oldest()

    def count(self, now: float | None = None) -> int:
        """How many errors are remembered now."""
        self._expire(now)
        return len(self._order)

    def p_within(self, margin_s: float, now: float | None = None) -> float:
        """Fraction of recent errors at most ``margin_s``: the chance a request predicted
        ``margin_s`` under its budget meets it. 1.0 while fewer than ``min_samples`` are
        remembered."""
        n = self.count(now)
        if n < self.min_samples:
            return 1.0
        return bisect.bisect_right(self._sorted, margin_s) / n

    def quantile(self, q: float, now: float | None = None) -> float:
        """The ``q`` quantile of recent errors (0.0 with none), for the metrics."""
        n = self.count(now)
        if not n:
            return 0.0
        return self._sorted[min(n - 1, max(0, round(q * (n - 1))))]
