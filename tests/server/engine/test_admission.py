"""Admission (``server.engine.admission.shed_for``): a latency budget the queues would make late
at every level is refused at once, one that an idle engine would miss anyway is not."""

from __future__ import annotations

import pytest

from server.budget import parse_budget
from server.engine.admission import Admission, shed_for
from server.errors import BacklogShed, ServerBusy
from tests.server.messages import BACKLOG_SHED


@pytest.mark.parametrize(
    ("budget", "wait_ms", "floor_ms", "shed"),
    [
        ("10ms", 12.0, 1.0, True),  # the queues make it late: shed
        ("10ms", 9.0, 1.0, False),  # in time
        ("10ms", 10.0, 1.0, False),  # predicted exactly on the budget is in time
        ("500us", 12.0, 1.0, False),  # even idle misses it: served degraded, not shed
        ("1ms", 12.0, 1.0, True),  # idle would just make it
        ("2MiB", 12.0, 1.0, False),  # no latency budget
        (None, 12.0, 1.0, False),  # no budget at all
    ],
)
def test_shed_for(budget: str | None, wait_ms: float, floor_ms: float, shed: bool) -> None:
    refusal = shed_for(parse_budget(budget), Admission(wait_ms / 1e3, floor_ms / 1e3))
    assert (refusal is not None) == shed


def test_the_refusal_says_why_and_when_to_retry() -> None:
    refusal = shed_for(parse_budget("10ms"), Admission(0.0125, 0.001))
    assert isinstance(refusal, BacklogShed) and isinstance(refusal, ServerBusy)
    assert (refusal.status, refusal.type) == (429, "server_busy")
    assert refusal.message == BACKLOG_SHED.format(wait_ms="12.5", budget_ms="10")
    assert refusal.headers() == {"Retry-After": "1"}
