"""A front end's adaptive concurrency limit: Netflix concurrency-limits' Gradient2 loop on
the latency the front end achieves (docs/decisions.md, goodput). Past the limit a request
is refused 429 before its body is read, so the requests a front end does take keep their
latency instead of queueing behind everyone else's (an event loop has no priorities)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from server.errors import ServerBusy


@dataclass
class Gradient2:
    """The requests in flight one front end allows, moved by the gradient between the
    long-run latency and the latest one: queueing shows as latency above the long-run
    average, and the limit falls until it goes; a front end with headroom grows it by
    ``queue`` requests a sample. As in Gradient2: the gradient is clamped to [0.5, 1]
    (no collapse on one outlier), the long-run average decays fast after overload, and a
    front end using under half its limit does not grow it."""

    initial: float = 20.0
    min_limit: float = 4.0
    max_limit: float = 512.0
    smoothing: float = 0.2
    tolerance: float = 1.5
    long_window: int = 600
    limit: float = field(init=False)
    long_rtt_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.limit = min(self.max_limit, max(self.min_limit, self.initial))

    def allows(self, inflight: int) -> bool:
        return inflight < math.floor(self.limit)

    def sample(self, rtt_s: float, inflight: int) -> None:
        """One answered request: its latency, and the requests in flight when it began."""
        if rtt_s <= 0:
            return
        if self.long_rtt_s == 0.0:
            self.long_rtt_s = rtt_s
        else:
            self.long_rtt_s += (rtt_s - self.long_rtt_s) / self.long_window
        if self.long_rtt_s / rtt_s > 2:  # recovering from overload: forget it sooner
            self.long_rtt_s *= 0.95
        if inflight < self.limit / 2:  # not using the limit: no evidence to grow it
            return
        gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt_s / rtt_s))
        target = self.limit * gradient + math.sqrt(self.limit)
        target = self.limit * (1 - self.smoothing) + target * self.smoothing
        self.limit = min(self.max_limit, max(self.min_limit, target))

    def refusal(self, inflight: int) -> ServerBusy:
        return ServerBusy(
            f"this front end is handling {inflight} inference requests, its adaptive "
            f"limit from the latency it achieves ({math.floor(self.limit)}); retry after "
            "Retry-After, or on another replica",
            retry_after_s=max(0.001, self.long_rtt_s),
        )
