"""The recent prediction errors as a chance of meeting a budget, the executor's capacity
ceiling, and how ``select_level`` weighs both: pure functions and small state, no
server."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from server.engine.capacity import EventRate, budgeted_ceiling
from server.engine.misses import PredictionErrors
from server.engine.profile import LatencyProfile
from server.engine.selection import LevelOption, select_level
from tests.conftest import FakeClock
from tests.server.engine.test_selection import budget, table

MS = 1e-3


def test_every_prediction_is_trusted_until_enough_errors_are_in() -> None:
    errors = PredictionErrors(window=8, min_samples=4)
    for e in (5 * MS, 6 * MS, 7 * MS):
        errors.record(e)
    assert errors.p_within(0.0) == 1.0  # three samples: no evidence yet
    errors.record(8 * MS)
    assert errors.p_within(0.0) == 0.0
    assert errors.p_within(6 * MS) == 0.5  # 5 and 6 ms of 5, 6, 7, 8
    assert errors.p_within(8 * MS) == 1.0


def test_the_window_keeps_the_last_errors_only() -> None:
    errors = PredictionErrors(window=4, min_samples=1)
    for e in (1, 2, 3, 4, 10, 11):
        errors.record(e * MS)
    assert errors.count() == 4  # 3, 4, 10, 11 ms
    assert errors.p_within(4 * MS) == 0.5
    assert errors.quantile(0.0) == 3 * MS
    assert errors.quantile(1.0) == 11 * MS


def test_a_request_that_missed_unanswered_counts_just_over_its_margin() -> None:
    errors = PredictionErrors(window=4, min_samples=1)
    errors.missed(2 * MS)
    assert errors.p_within(2 * MS) == 0.0
    assert errors.p_within(2.1 * MS) == 1.0


def test_quantile_without_errors_is_zero() -> None:
    assert PredictionErrors().quantile(0.99) == 0.0


def test_errors_older_than_max_age_are_forgotten() -> None:
    """A bad spell at t = 0 (40 answers 20 ms late), then nothing at that level: its chance
    for a 10 ms margin is 0 until the spell is 30 s old, then it is trusted again (1.0: too
    few left); the newer errors of t = 20 s outlive the old ones."""
    errors = PredictionErrors(window=256, min_samples=32, max_age_s=30.0)
    for _ in range(40):
        errors.record(20 * MS, now=0.0)
    for _ in range(10):
        errors.record(1 * MS, now=20.0)
    assert errors.p_within(10 * MS, now=29.0) == 10 / 50
    assert errors.quantile(0.5, now=29.0) == 20 * MS
    assert errors.count(now=30.5) == 10
    assert errors.p_within(10 * MS, now=30.5) == 1.0  # 10 left, under min_samples
    assert errors.quantile(0.5, now=30.5) == 1 * MS
    assert errors.count(now=50.5) == 0


def test_event_rate_is_a_decaying_count_per_second() -> None:
    rate = EventRate(tau_s=0.5, clock=lambda: 0.0)
    for i in range(100):
        rate.add(1, now=i * 0.01)  # 100 a second for one second
    assert rate.per_s(1.0) == pytest.approx(100 * (1 - math.exp(-2)), rel=0.02)
    assert rate.per_s(1.5) == pytest.approx(rate.per_s(1.0) * math.exp(-1))
    assert EventRate(clock=lambda: 0.0).per_s(5.0) == 0.0
    clock = FakeClock()
    driven = EventRate(tau_s=0.5, clock=clock)
    driven.add(50)  # at the clock's time
    clock.advance(0.5)  # one time constant later: 100/s decayed by e
    assert driven.per_s() == pytest.approx(100 * math.exp(-1))


def profile(per_example_ms: dict[int, float], batch: int = 32) -> LatencyProfile:
    p = LatencyProfile()
    for level, ms in per_example_ms.items():
        p.table[("shapes", level)] = {1: ms * MS, batch: ms * batch * MS}
    return p


@pytest.mark.parametrize(
    ("rate", "ceiling"), [(100.0, 4), (699.0, 4), (701.0, 1), (1399.0, 1), (9000.0, 1)]
)
def test_past_the_top_levels_capacity_budgeted_traffic_moves_to_level_1(
    rate: float, ceiling: int
) -> None:
    """Not to level 3 (under the target at 701/s): one level in use, so batches merge."""
    p = profile({1: 0.05, 2: 0.2, 3: 0.5, 4: 1.0})
    assert budgeted_ceiling(p, "shapes", [1, 2, 3, 4], rate, 32, 0.7) == ceiling


def weighed(meet: Sequence[float], capacity: Sequence[bool] = (True,) * 4) -> list[LevelOption]:
    """``table()`` with each level's chance of meeting the budget and capacity flag."""
    return [
        LevelOption(
            level=o.level,
            param_bytes=o.param_bytes,
            accuracy=o.accuracy,
            predicted_latency_s=o.predicted_latency_s,
            meet_probability=meet[o.level - 1],
            within_capacity=capacity[o.level - 1],
        )
        for o in table()
    ]


@pytest.mark.parametrize(
    ("meet", "spec", "level"),
    [
        ((1.0, 1.0, 1.0, 1.0), "10ms", 4),
        # Expected accuracy 0.6, 0.7, 0.8 x 0.9 = 0.72, 0.9 x 0.7 = 0.63: level 3.
        ((1.0, 1.0, 0.9, 0.7), "10ms", 3),
        # 0.6 x 1.0 beats 0.7 x 0.5, 0.8 x 0.4 and 0.9 x 0.2.
        ((1.0, 0.5, 0.4, 0.2), "10ms", 1),
        # Level 4 is predicted over 5 ms: whatever its chance, it is not a candidate.
        ((0.1, 0.1, 0.1, 1.0), "5ms", 3),
        # Without a latency budget the chances are not consulted.
        ((1.0, 0.5, 0.4, 0.2), None, 4),
        # No level has any chance: the fastest (level 1, predicted 1 ms), not the largest.
        ((0.0, 0.0, 0.0, 0.0), "10ms", 1),
    ],
)
def test_select_weighs_accuracy_by_the_chance_of_meeting_the_budget(
    meet: Sequence[float], spec: str | None, level: int
) -> None:
    parsed = None if spec is None else budget(spec)
    assert select_level("digits", weighed(meet), parsed).level == level


@pytest.mark.parametrize(
    ("capacity", "spec", "level", "reason"),
    [
        # Levels 3 and 4 past the executor's capacity: latency budgets stay at level 2.
        ((True, True, False, False), "10ms", 2, "budget"),
        # None within capacity: the smallest that meets the budget.
        ((False, False, False, False), "10ms", 1, "budget"),
        # Without a latency budget the ceiling does not apply, nor to memory budgets.
        ((True, True, False, False), None, 4, "default"),
        ((True, True, False, False), "2MiB", 4, "budget"),
    ],
)
def test_latency_budgets_stay_under_the_capacity_ceiling(
    capacity: Sequence[bool], spec: str | None, level: int, reason: str
) -> None:
    parsed = None if spec is None else budget(spec)
    chosen = select_level("digits", weighed((1.0,) * 4, capacity), parsed)
    assert (chosen.level, chosen.reason) == (level, reason)
