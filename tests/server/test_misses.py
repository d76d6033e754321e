"""The recent prediction errors as a chance of meeting a budget, and the executor's
capacity ceiling: pure functions and small state, no server."""

from __future__ import annotations

import math

import pytest

from server.capacity import EventRate, budgeted_ceiling, level_ceiling
from server.misses import PredictionErrors
from server.profile import LatencyProfile

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
    assert len(errors) == 4  # 3, 4, 10, 11 ms
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


def test_event_rate_is_a_decaying_count_per_second() -> None:
    rate = EventRate(tau_s=0.5, _at=0.0)
    for i in range(100):
        rate.add(1, now=i * 0.01)  # 100 a second for one second
    assert rate.per_s(1.0) == pytest.approx(100 * (1 - math.exp(-2)), rel=0.02)
    assert rate.per_s(1.5) == pytest.approx(rate.per_s(1.0) * math.exp(-1))
    assert EventRate(_at=0.0).per_s(5.0) == 0.0


def profile(per_example_ms: dict[int, float], batch: int = 32) -> LatencyProfile:
    p = LatencyProfile()
    for level, ms in per_example_ms.items():
        p.table[("shapes", level)] = {1: ms * MS, batch: ms * batch * MS}
    return p


@pytest.mark.parametrize(
    ("rate", "ceiling"),
    [
        (100.0, 4),  # level 4: 100/s x 1 ms = 0.1 s a second
        (699.0, 4),  # just under the target
        (701.0, 3),
        (1399.0, 3),  # level 3: 1399 x 0.5 ms, just under 0.7
        (3000.0, 2),
        (9000.0, 1),  # level 1 over the target too: the smallest anyway
    ],
)
def test_the_ceiling_is_the_largest_level_under_the_target(rate: float, ceiling: int) -> None:
    p = profile({1: 0.05, 2: 0.2, 3: 0.5, 4: 1.0})
    assert level_ceiling(p, "shapes", [1, 2, 3, 4], rate, 32, 0.7) == ceiling


@pytest.mark.parametrize(("rate", "ceiling"), [(699.0, 4), (701.0, 1), (9000.0, 1)])
def test_past_the_top_levels_capacity_budgeted_traffic_moves_to_level_1(
    rate: float, ceiling: int
) -> None:
    """Not to level 3 (under the target at 701/s): one level in use, so batches merge."""
    p = profile({1: 0.05, 2: 0.2, 3: 0.5, 4: 1.0})
    assert budgeted_ceiling(p, "shapes", [1, 2, 3, 4], rate, 32, 0.7) == ceiling
