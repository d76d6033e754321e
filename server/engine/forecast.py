"""What each level of a task would cost a request now, as selection sees it: the latency
profile, the queues ahead, the measured per-request overhead, the recent prediction errors
(``server.engine.misses``) and the arrival rate (``server.engine.capacity``).
``server.engine.selection`` decides from these; ``server.engine.core`` keeps them current."""

from __future__ import annotations

from collections import defaultdict

from model_store.manifest import TaskEntry
from server.budget import Budget
from server.engine.batching import Batcher
from server.engine.capacity import (
    TARGET_BUSY,
    Attainment,
    EventRate,
    break_even_miss_share,
    budgeted_ceiling,
)
from server.engine.misses import PredictionErrors
from server.engine.profile import LatencyProfile, LevelKey, QueueState, predict_latency
from server.engine.selection import LevelOption
from server.settings import Settings


class Forecaster:
    def __init__(self, profile: LatencyProfile, batcher: Batcher, settings: Settings) -> None:
        clock = batcher.clock  # one clock for the queues and the rates
        self.profile = profile
        self.batcher = batcher
        self.settings = settings
        self.overhead_s = 0.0005  # non-forward time per request, kept current by the service
        # measured - predicted of recent budgeted requests, by the level selected for them
        self.errors: defaultdict[LevelKey, PredictionErrors] = defaultdict(PredictionErrors)
        self.arrivals = EventRate(clock=clock)  # examples a second, every task
        # latency budgets met and missed, every task
        self.attainment = Attainment(clock=clock)
        self._break_even: dict[str, float] = {}  # by task: its accuracies do not change

    def queue_state(self) -> QueueState:
        return QueueState(self.batcher.busy_remaining_s(), dict(self.batcher.queued_examples))

    def _predict(self, state: QueueState, key: LevelKey, examples: int) -> float:
        return predict_latency(
            self.profile,
            state,
            key,
            examples,
            self.settings.max_batch_size,
            self.overhead_s,
        )

    def predicted_s(self, task: str, level: int) -> float:
        """The latency one example at ``level`` of ``task`` is predicted to see now."""
        return self._predict(self.queue_state(), (task, level), 1)

    def ceiling(self, task: TaskEntry) -> int:
        """The largest level ``task``'s latency-budgeted requests may use now
        (``server.engine.capacity``): level 1 while recent budgets were missed past the break-even
        share, else by the executor's time at today's arrival rate."""
        break_even = self._break_even.get(task.name)
        if break_even is None:
            accuracies = [None if lv.accuracy is None else lv.accuracy.value for lv in task.levels]
            break_even = self._break_even[task.name] = break_even_miss_share(accuracies)
        if self.attainment.missed_share() > break_even:
            return min(lv.level for lv in task.levels)
        return budgeted_ceiling(
            self.profile,
            task.name,
            [lv.level for lv in task.levels],
            self.arrivals.per_s(),
            self.settings.max_batch_size,
            TARGET_BUSY,
        )

    def answered(self, key: LevelKey, error_s: float, met: bool) -> None:
        """A budgeted request answered at ``key``: its prediction error, and whether its
        latency budget was met."""
        self.errors[key].record(error_s)
        self.attainment.record(met)

    def timed_out(self, key: LevelKey, margin_s: float) -> None:
        """A budgeted request at ``key`` whose deadline passed in a queue (504), predicted
        ``margin_s`` under its budget."""
        self.errors[key].missed(margin_s)
        self.attainment.record(False)

    def error_quantile(self, task: str, level: int, q: float) -> float:
        """The ``q`` quantile of ``level``'s recent prediction errors (0 with none)."""
        errors = self.errors.get((task, level))
        return 0.0 if errors is None else errors.quantile(q)

    def options(
        self,
        task: TaskEntry,
        examples: int,
        budget: Budget | None = None,
        only: int | None = None,
    ) -> list[LevelOption]:
        """Every level of ``task`` (or level ``only``) as selection sees it now; with a
        latency budget, each with its chance of meeting it given the recent prediction
        errors, and whether it is under the capacity ceiling. A latency budget while the
        ceiling is level 1 sees level 1 alone (selection could choose no other, and at
        overload the other levels' predictions are work the event loop cannot spare)."""
        state = self.queue_state()
        latency = None if budget is None else budget.latency_s
        ceiling = len(task.levels)
        if latency is not None and only is None:
            ceiling = self.ceiling(task)
            if ceiling == task.levels[0].level:
                only = ceiling
        found = []
        for lv in task.levels if only is None else task.levels[only - 1 : only]:
            key = (task.name, lv.level)
            predicted = self._predict(state, key, examples)
            found.append(
                LevelOption(
                    level=lv.level,
                    param_bytes=lv.param_bytes,
                    accuracy=None if lv.accuracy is None else lv.accuracy.value,
                    predicted_latency_s=predicted,
                    queue_full=self.batcher.depth(key) >= self.settings.max_queue_size,
                    meet_probability=1.0
                    if latency is None
                    else self.errors[key].p_within(latency - predicted),
                    within_capacity=lv.level <= ceiling,
                )
            )
        return found
