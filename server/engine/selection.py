"""Choosing a task's level for a request: a pure function of the levels' costs, accuracies,
predicted latencies (profile + queue state) and the request's budget. No server needed to
test it; ``server.engine.core`` feeds it live numbers.

Rules (docs/api.md, level selection):

* A pinned level is served as asked (``pinned``).
* Among the levels that fit every constraint, the one with the highest expected accuracy:
  manifest accuracy times the chance it meets the latency budget (``meet_probability``,
  from the recent prediction errors, ``server.engine.misses``; 1 without a latency budget). The
  largest level where no accuracy is recorded; ties go to the larger level. When no level
  has any chance (overload), the fastest. Reason ``budget``, or ``default`` with no budget.
* With a latency budget, only the levels ``within_capacity`` (``server.engine.capacity``: past
  the top level's capacity at the current arrival rate, level 1 only); the smallest that
  meets the budget when none is.
* A memory budget below the smallest level is an error naming that level's size.
* A latency budget no level meets: ``degrade`` serves the smallest level (``degraded``),
  ``reject`` is a 503 with ``Retry-After``.
* A full queue: the next best level that still fits the budget and has room
  (``degraded``); none: 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from model_store.manifest import TaskEntry
from server.budget import Budget
from server.errors import BudgetUnsatisfiable, DeadlineUnmeetable, InvalidParameter, QueueFull

Reason = Literal["budget", "default", "pinned", "degraded"]
OnMiss = Literal["degrade", "reject"]


@dataclass(frozen=True)
class LevelOption:
    """One level as the selector sees it right now."""

    level: int
    param_bytes: int
    accuracy: float | None
    predicted_latency_s: float
    queue_full: bool = False
    meet_probability: float = 1.0  # chance of answering within the latency budget
    within_capacity: bool = True  # the executor keeps up at today's rate (server.engine.capacity)


@dataclass(frozen=True)
class Selection:
    level: int
    reason: Reason
    predicted_latency_s: float


def human_bytes(n: int) -> str:
    """``46144`` -> ``'45.1 KiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _rank(option: LevelOption, weigh: bool) -> tuple[float, int]:
    """Expected accuracy (accuracy x chance of meeting the latency budget when ``weigh``),
    then the level."""
    if option.accuracy is None:
        return (-1.0, option.level)
    return (option.accuracy * (option.meet_probability if weigh else 1.0), option.level)


def fits_memory(option: LevelOption, budget: Budget | None) -> bool:
    return (
        budget is None or budget.memory_bytes is None or option.param_bytes <= budget.memory_bytes
    )


def fits_latency(option: LevelOption, budget: Budget | None) -> bool:
    return (
        budget is None or budget.latency_s is None or option.predicted_latency_s <= budget.latency_s
    )


def select_level(
    task: str,
    options: Sequence[LevelOption],
    budget: Budget | None,
    *,
    pinned: int | None = None,
    on_miss: OnMiss = "degrade",
) -> Selection:
    """The level to serve ``task`` at, with the reason.

    Raises:
        BudgetUnsatisfiable: memory budget below the smallest level.
        DeadlineUnmeetable: no level meets the latency budget and ``on_miss`` is reject.
        QueueFull: every allowed level's queue is full.
    """
    by_level = sorted(options, key=lambda o: o.level)
    soonest = min(o.predicted_latency_s for o in by_level)
    if pinned is not None:
        chosen = next(o for o in by_level if o.level == pinned)
        if chosen.queue_full:
            raise QueueFull(
                f"the queue of task {task!r} level {pinned} is full; retry later or let the "
                "server choose the level (no level=)",
                retry_after_s=chosen.predicted_latency_s,
            )
        return Selection(pinned, "pinned", chosen.predicted_latency_s)

    in_memory = [o for o in by_level if fits_memory(o, budget)]
    if not in_memory:
        assert budget is not None and budget.memory_bytes is not None
        smallest = min(by_level, key=lambda o: o.param_bytes)
        raise BudgetUnsatisfiable(
            f"memory budget {budget.memory_bytes} B ({human_bytes(budget.memory_bytes)}) is below "
            f"the smallest level of task {task!r}: level {smallest.level} needs "
            f"{smallest.param_bytes} B ({human_bytes(smallest.param_bytes)}); raise the budget "
            "to at least that"
        )
    timed = budget is not None and budget.latency_s is not None
    meeting = sorted(
        (o for o in in_memory if fits_latency(o, budget)),
        key=lambda o: _rank(o, timed),
        reverse=True,
    )
    if timed:
        # Under sustained load, latency budgets stay at levels the executor keeps up with.
        meeting = [o for o in meeting if o.within_capacity] or sorted(
            meeting, key=lambda o: o.param_bytes
        )[:1]
        if meeting and all(o.meet_probability == 0 for o in meeting):
            # No level has made a margin like this lately (overload): the fastest one has
            # the best chance, and costs the others least.
            meeting.sort(key=lambda o: o.predicted_latency_s)
    reason: Reason = "default" if budget is None else "budget"
    if not meeting:
        assert budget is not None and budget.latency_s is not None
        if on_miss == "reject":
            raise DeadlineUnmeetable(
                f"no level of task {task!r} can answer within {budget.latency_s * 1e3:g} ms now "
                f"(the fastest is predicted at {soonest * 1e3:.1f} ms); retry later, raise the "
                "budget, or use on_miss=degrade to get the smallest level anyway",
                retry_after_s=soonest,
            )
        meeting = sorted(in_memory, key=lambda o: o.param_bytes)  # smallest first
        reason = "degraded"
    for rank, option in enumerate(meeting):
        if not option.queue_full:
            return Selection(
                option.level, reason if rank == 0 else "degraded", option.predicted_latency_s
            )
    raise QueueFull(
        f"every queue of task {task!r} that fits the budget is full; retry after the "
        "Retry-After interval or send less load",
        retry_after_s=soonest,
    )


def check_level(task: TaskEntry, level: int | None) -> None:
    """Raises InvalidParameter (422) for a level outside ``task``'s 1..n (None: no level)."""
    if level is not None and not 1 <= level <= len(task.levels):
        raise InvalidParameter(
            f"level {level} is out of range for task {task.name!r}: use 1..{len(task.levels)}"
        )
