"""Per-level weight copies capped by bytes. A :class:`~model_store.inference.LevelPlan` (a
level's weight slices copied out once, batch norm folded in) makes a small level's forward
fast, but every plan is memory beside the checkpoint: all of them together hold the sum of
every level's parameters, several times the one set of weights a DVN exists to share. So
only the hottest levels get a plan, within ``capacity_bytes``; the rest run on the one set
of weights (``model(x, task, level)``).

Heat is the number of forwards a level ran, halved every ``HALF_LIFE_FORWARDS`` forwards so
that it follows the traffic; a colder plan is evicted for a level at least twice as hot.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from torch import Tensor

from model_store.inference import LevelPlan
from model_store.model import DVN

HALF_LIFE_FORWARDS = 1000
Forward = Callable[[Tensor], Tensor]


class PlanCache:
    def __init__(
        self,
        model: DVN,
        capacity_bytes: int,
        build: Callable[[DVN, int, int], LevelPlan] = LevelPlan.build,
    ) -> None:
        self.model = model
        self.capacity_bytes = capacity_bytes
        self._build = build
        self.plans: dict[tuple[int, int], LevelPlan] = {}
        self.sizes: dict[tuple[int, int], int] = {}  # a plan's bytes, once built
        self.heat: Counter[tuple[int, int]] = Counter()
        self._forwards = 0
        self._lock = threading.Lock()  # forwards come from more than one thread (warm-up, inline)

    @property
    def used_bytes(self) -> int:
        return sum(p.nbytes for p in self.plans.values())

    def forward(self, task: int, level: int) -> Forward:
        """What runs (task, level) now: its plan, or the model's own forward."""
        key = (task, level)
        with self._lock:
            self._count(key)
            plan = self.plans.get(key)
            if plan is None and self._make_room(key):
                plan = self._build(self.model, task, level)
                self.sizes[key] = plan.nbytes
                if plan.nbytes <= self.capacity_bytes - self.used_bytes or self._make_room(key):
                    self.plans[key] = plan
                else:
                    plan = None  # its size is known now: not built again until it fits
        if plan is not None:
            return plan
        return lambda x: self.model(x, task, level)

    def _count(self, key: tuple[int, int]) -> None:
        self.heat[key] += 1
        self._forwards += 1
        if self._forwards % HALF_LIFE_FORWARDS == 0:
            for k in self.heat:
                self.heat[k] //= 2

    def _make_room(self, key: tuple[int, int]) -> bool:
        """Whether ``key`` may have a plan: its size is not known yet (built once to learn
        it), it fits, or it fits once plans at most half as hot are evicted (coldest first,
        evicted here)."""
        size = self.sizes.get(key)
        if size is None:
            return True
        if size > self.capacity_bytes:
            return False
        free = self.capacity_bytes - self.used_bytes
        if size <= free:
            return True
        colder = sorted(
            (k for k in self.plans if 2 * self.heat[k] <= self.heat[key]),
            key=lambda k: self.heat[k],
        )
        victims = []
        for k in colder:
            if free >= size:
                break
            victims.append(k)
            free += self.plans[k].nbytes
        if free < size:
            return False
        for k in victims:
            del self.plans[k]
        return True
