"""How far off the latency predictions have been lately, as the chance that a request
predicted to take ``p`` seconds answers within a budget ``b``.

The profile predicts the executor's share of a request (the queues ahead, the forward)
plus a smoothed per-request overhead. What it cannot see, the event loop's own queue on a
busy machine, the wake-up of a batch's requests one after another, a forward preempted by
another process, shows up as the error ``measured - predicted`` of answered requests. Its
recent distribution turns a prediction into a probability of meeting the budget, which
selection weighs against each level's accuracy (``server.selection``). A request whose
deadline passed in a queue (504, never answered) counts as an error just over its margin:
all that is known is that it missed.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field


@dataclass
class PredictionErrors:
    """The last ``window`` errors (seconds, measured minus predicted), sorted for lookups."""

    window: int = 256
    min_samples: int = 32  # fewer than this: no evidence yet, every prediction is trusted
    _order: deque[float] = field(default_factory=deque)
    _sorted: list[float] = field(default_factory=list)

    def record(self, error_s: float) -> None:
        self._order.append(error_s)
        bisect.insort(self._sorted, error_s)
        if len(self._order) > self.window:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def missed(self, margin_s: float) -> None:
        """A request with ``margin_s`` (budget minus prediction) that missed unanswered."""
        self.record(margin_s + 1e-6)

    def __len__(self) -> int:
        return len(self._order)

    def p_within(self, margin_s: float) -> float:
        """Fraction of recent errors at most ``margin_s``: the chance a request predicted
        ``margin_s`` under its budget meets it. 1.0 until ``min_samples`` are in."""
        n = len(self._sorted)
        if n < self.min_samples:
            return 1.0
        return bisect.bisect_right(self._sorted, margin_s) / n

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of recent errors (0.0 with none), for the metrics."""
        if not self._sorted:
            return 0.0
        i = min(len(self._sorted) - 1, max(0, round(q * (len(self._sorted) - 1))))
        return self._sorted[i]
