"""The engine's pace: how fast its forwards run now against its start-up profile, in any
level (what the Ray request router weighs, server/ray/router.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from server.engine.executor import ForwardFn
from server.engine.profile import LatencyProfile, Pace
from tests.conftest import AppClient, ServeFactory
from tests.server.helpers import example

KEY = ("digits", 4)
STARTUP = LatencyProfile(table={KEY: {1: 0.001, 8: 0.004}})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pace_is_observed_over_expected_time() -> None:
    pace = Pace(startup=STARTUP, clock=Clock())
    assert pace.ratio == 1.0  # nothing computed yet: as profiled
    pace.record(KEY, 8, 0.012)
    pace.record(KEY, 1, 0.003)
    assert pace.ratio == pytest.approx(3.0)


def test_pace_forgets_old_batches() -> None:
    pace = Pace(startup=STARTUP, decay=0.5, clock=Clock())
    for _ in range(20):
        pace.record(KEY, 1, 0.010)  # 10x slow for a while
    for _ in range(20):
        pace.record(KEY, 1, 0.001)  # then as profiled
    assert pace.ratio == pytest.approx(1.0, abs=1e-3)


def test_an_idle_engine_drifts_back_to_the_profiled_pace() -> None:
    clock = Clock()
    pace = Pace(startup=STARTUP, clock=clock, half_life_s=10.0)
    pace.record(KEY, 1, 0.003)
    assert pace.ratio == pytest.approx(3.0)
    clock.now = 10.0
    assert pace.ratio == pytest.approx(2.0)  # half the way back to 1
    clock.now = 20.0
    assert pace.ratio == pytest.approx(1.5)
    # Still slow once it computes again: the faded 1.5 (0.9 x 0.0015 s against 0.9 x
    # 0.001 s) and the new 3x batch.
    pace.record(KEY, 1, 0.003)
    assert pace.ratio == pytest.approx((0.9 * 0.0015 + 0.003) / (0.9 * 0.001 + 0.001))
    for _ in range(30):
        pace.record(KEY, 1, 0.003)
    assert pace.ratio == pytest.approx(3.0, abs=0.05)


def test_unprofiled_forwards_do_not_count() -> None:
    pace = Pace()  # before the warm-up measured anything
    pace.record(KEY, 1, 5.0)
    assert pace.ratio == 1.0


SLOW_S = 0.02


def slowed(forward: ForwardFn) -> ForwardFn:
    def run(task: int, level: int, x: np.ndarray) -> np.ndarray:
        time.sleep(SLOW_S)
        return forward(task, level, x)

    return run


async def test_a_slowed_engine_reports_its_pace(serve: ServeFactory) -> None:
    """Every forward 20 ms slower after the warm-up (a throttled device, a busy neighbour):
    the pace rises to what that costs against the profile. Bounded from what is known, not
    timed: 10 slowed batches weigh at least 20 ms x (1 + 0.9 + ... + 0.9^9) = 130 ms observed,
    against at most 10 x the profiled forward expected (the decayed weights of every batch
    sum to under 1 / (1 - 0.9)); a busy test box only makes forwards slower."""
    client: AppClient = await serve()
    service = client.app.state.runtime.service
    profiled = service.pace.startup.forward_s(("digits", 4), 1)
    assert profiled > 0  # the warm-up's profile
    x = {"inputs": example("digits", 0).tolist()}
    for _ in range(5):
        assert (await client.post("/infer/digits?level=4", json=x)).status_code == 200
    before = service.pace.ratio
    service.executor.forward = slowed(service.executor.forward)
    for _ in range(10):
        assert (await client.post("/infer/digits?level=4", json=x)).status_code == 200
    floor = SLOW_S * sum(0.9**i for i in range(10)) / (10 * profiled)
    assert service.pace.ratio >= floor, (service.pace.ratio, floor, profiled)
    assert service.pace.ratio > before, (before, service.pace.ratio)
