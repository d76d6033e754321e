"""The budgets watch of the capacity ceiling: recent latency budgets met and missed, the
break-even miss share, and selection keeping budgeted traffic at level 1 past it; which
outcomes count as misses (late answers, 504s, sheds)."""

from __future__ import annotations

import json

import pytest

from server.budget import Budget
from server.engine.capacity import Attainment, break_even_miss_share
from tests.conftest import AppClient, FakeClock, ServeFactory
from tests.server.helpers import error_of, example, sample
from tests.server.queues import metrics

SHAPES = [0.87, 0.928, 0.9503, 0.9527]  # the demo's shapes accuracies, levels 1-4


def test_missed_share_of_the_recent_budgets() -> None:
    att = Attainment(tau_s=1.0, min_events=20)
    for i in range(9):
        att.record(True, now=i * 0.01)
    att.record(False, now=0.09)
    assert att.missed_share(now=0.1) == 0.0  # 10 in the last second: too few to tell
    for i in range(20):
        att.record(i % 2 == 0, now=0.1 + i * 0.01)
    # 30 within 0.3 s, 11 of them missed (the older weigh up to 26% less)
    assert att.missed_share(now=0.3) == pytest.approx(11 / 30, rel=0.1)
    assert att.missed_share(now=10.0) == 0.0  # forgotten: under min_events again


def test_break_even_miss_share_from_the_accuracies() -> None:
    # level 1 alone scores 0.87 a budget; the best mix at most 0.9527 a budget met
    assert break_even_miss_share(SHAPES) == pytest.approx((0.9527 - 0.87) / 0.9527)
    assert break_even_miss_share([0.9, None, 0.95]) == 0.05  # not recorded: a fixed share
    assert break_even_miss_share([]) == 0.05


def missed(n: int) -> Attainment:
    att = Attainment(tau_s=1e9, min_events=1)  # nothing decays during the test
    for _ in range(n):
        att.record(False)
    return att


async def test_past_the_break_even_miss_share_budgets_go_to_level_1(client: AppClient) -> None:
    """Recent budgets mostly missed: a latency budget gets level 1 (the ceiling says so);
    no budget still gets the best level. Once budgets are met again, every level opens."""
    service = client.app.state.runtime.service
    x = {"inputs": example("digits", 98).tolist()}
    service.forecast.attainment = missed(30)
    timed = (await client.post("/infer/digits?budget=10s", json=x)).json()
    assert (timed["level"], timed["selection"]) == (1, "budget")
    assert (await client.post("/infer/digits", json=x)).json()["level"] == 4
    assert sample(await metrics(client), "dvn_level_ceiling", task="digits") == 1
    service.forecast.attainment = Attainment(tau_s=1e9, min_events=1)
    for _ in range(30):
        service.forecast.attainment.record(True)
    assert (await client.post("/infer/digits?budget=10s", json=x)).json()["level"] == 4
    assert sample(await metrics(client), "dvn_level_ceiling", task="digits") == 4


async def test_at_a_level_1_ceiling_selection_sees_level_1_alone(client: AppClient) -> None:
    """The other levels' predictions are not computed for a latency budget then (selection
    could choose none of them); without a budget, or pinned, as before."""
    service = client.app.state.runtime.service
    forecast, digits = service.forecast, service.tasks["digits"]
    tight = Budget("10s", latency_s=10.0)
    assert [o.level for o in forecast.options(digits, 1, tight)] == [1, 2, 3, 4]
    forecast.attainment = missed(30)
    assert [(o.level, o.within_capacity) for o in forecast.options(digits, 1, tight)] == [(1, True)]
    assert [o.level for o in forecast.options(digits, 1)] == [1, 2, 3, 4]
    assert [o.level for o in forecast.options(digits, 1, tight, only=3)] == [3]


def counts(att: Attainment) -> tuple[int, int]:
    """(met, missed) recorded, for an attainment that never decays."""
    return round(att._met.per_s() * att.tau_s), round(att._missed.per_s() * att.tau_s)


async def test_met_late_timed_out_and_shed_budgets_are_counted(serve: ServeFactory) -> None:
    clock = FakeClock()
    client = await serve(clock=clock)
    service = client.app.state.runtime.service
    service.forecast.attainment = att = Attainment(tau_s=1e9, min_events=1)
    x = {"inputs": example("digits", 7).tolist()}
    assert (await client.post("/infer/digits?budget=10s", json=x)).status_code == 200
    assert (await client.post("/infer/digits", json=x)).status_code == 200  # no budget
    assert counts(att) == (1, 0)
    late = await client.post("/infer/digits?budget=1us", json=x)  # past its deadline: 504
    assert error_of(late)[:2] == (504, "deadline_exceeded")
    assert counts(att) == (1, 1)
    service.batcher.busy_until = clock() + 0.4  # a forward 0.4 s from its end
    body = json.dumps(x).encode()
    shed = await client.post(
        "/infer/digits?budget=90ms", content=body, headers={"content-type": "application/json"}
    )
    service.batcher.busy_until = 0.0
    assert error_of(shed)[:2] == (429, "server_busy")
    assert counts(att) == (1, 2)
