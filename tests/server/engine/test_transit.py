"""The time a request waits to be read by the engine (``wire.transit_s``) counts against
its budget: an engine that falls behind reading its socket does not take a request that
spent its budget in transit for a fresh one."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest

from server.engine import wire
from server.errors import DeadlineExceeded
from tests.conftest import ServeFactory


def request(budget: str | None = "20ms", **stamp: object) -> wire.Infer:
    message = wire.Infer(1, "digits", budget, None, "degrade", 0.0, "r1", (1, 1, 8, 8), "float32")
    return msgspec.structs.replace(message, **stamp)


def test_transit_of_a_request_sent_on_this_host_is_the_time_since_it_was_sent() -> None:
    sent = request(sent_at=time.monotonic() - 0.2, host=wire.this_host())
    assert wire.transit_s(sent) == pytest.approx(0.2, abs=0.05)
    assert 0 <= wire.transit_s(wire.stamped(request())) < 0.05


@pytest.mark.parametrize(
    "stamp",
    [{}, {"sent_at": time.monotonic() - 5, "host": "another-boot"}],
    ids=["unstamped", "another-host"],
)
def test_transit_is_unknown_from_another_clock(stamp: dict[str, object]) -> None:
    assert wire.transit_s(request(**stamp)) == 0.0


async def test_a_request_that_spent_its_budget_in_transit_is_not_computed(
    serve: ServeFactory,
) -> None:
    client = await serve()
    engine = client.app.state.runtime.service
    shape = tuple(engine.task("digits").input_shape)
    inputs = np.zeros((1, *shape), np.float32)
    fresh = msgspec.structs.replace(request(), shape=(1, *shape))
    answer = await engine.infer(fresh, inputs, key="fresh")
    assert answer.latency_met is True
    stale = msgspec.structs.replace(
        fresh, id=2, sent_at=time.monotonic() - 0.05, host=wire.this_host()
    )
    with pytest.raises(DeadlineExceeded):
        await engine.infer(stale, inputs, key="stale")
