"""The front end's adaptive concurrency limit (server/http/limit.py): it falls while the
latency rises above its long-run average, grows while it does not, stays within its
bounds, and a front end past it answers 429 before reading the body."""

from __future__ import annotations

import math

import pytest

from server.http.limit import Gradient2
from tests.conftest import ServeFactory
from tests.server.messages import ADAPTIVE_LIMIT


def test_steady_latency_under_load_grows_the_limit_by_its_square_root() -> None:
    limit = Gradient2(initial=16)
    limit.sample(0.002, inflight=16)  # the first sample is the long-run average itself
    # gradient 1: 16 * 1 + sqrt(16) = 20, smoothed 0.2: 16 * 0.8 + 20 * 0.2
    assert limit.limit == pytest.approx(16.8)


def test_latency_far_above_its_average_halves_the_step_at_most() -> None:
    limit = Gradient2(initial=20)
    limit.sample(0.002, inflight=20)
    grown = limit.limit
    limit.sample(0.2, inflight=20)  # 100x the average: the gradient is clamped at 0.5
    target = grown * 0.5 + math.sqrt(grown)
    assert limit.limit == pytest.approx(grown * 0.8 + target * 0.2)
    assert limit.limit < grown


def test_sustained_queueing_drives_the_limit_to_its_floor_and_not_below() -> None:
    limit = Gradient2(initial=100, min_limit=4)
    limit.sample(0.001, inflight=100)
    for _ in range(200):
        limit.sample(0.05, inflight=int(limit.limit))
    # at gradient 0.5 the fixed point of L = 0.8 L + 0.2 (L / 2 + sqrt(L)) is 4: the floor
    assert limit.limit == pytest.approx(4, abs=0.01)
    assert limit.allows(3) and not limit.allows(4)
    limit.sample(10.0, inflight=4)
    assert limit.limit >= 4


def test_a_front_end_using_under_half_its_limit_does_not_grow_it() -> None:
    limit = Gradient2(initial=40)
    limit.sample(0.002, inflight=19)
    assert limit.limit == 40


def test_the_limit_never_passes_max_inflight() -> None:
    limit = Gradient2(initial=10, max_limit=12)
    for _ in range(50):
        limit.sample(0.002, inflight=int(limit.limit))
    assert limit.limit == 12


def test_refusal_is_a_429_naming_the_limit() -> None:
    limit = Gradient2(initial=7)
    error = limit.refusal(7)
    assert (error.status, error.type) == (429, "server_busy")
    assert str(error) == ADAPTIVE_LIMIT.format(inflight=7, limit=7)
    assert error.headers() == {"Retry-After": "1"}


async def test_front_end_past_its_adaptive_limit_answers_429_before_the_body(
    serve: ServeFactory,
) -> None:
    client = await serve(concurrency_limit="gradient2")
    fe = client.app.state.frontend
    assert fe.limiter is not None
    fe.limiter.limit = 4.0
    fe.inflight = 4  # as if four requests were being handled
    r = await client.post(
        "/infer/digits", content=b"not read", headers={"content-type": "application/x-npy"}
    )
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "server_busy"
    assert r.json()["error"]["message"] == ADAPTIVE_LIMIT.format(inflight=4, limit=4)
    fe.inflight = 0
    fe.limiter.limit = 20.0
    served = await client.post(
        "/infer/digits", content=b"not an array", headers={"content-type": "application/x-npy"}
    )
    assert served.status_code == 400  # under the limit the body is read (and refused)
