"""Scheduling under load, in process: which queue the executor serves next (earliest
deadline first; no budget yields for a while, never for ever), the refusal up front of a
request the backlog in flight would outlast, inline forwards on an idle server, and
selection by the arrival rate and by the recent prediction errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from model_store.checkpoint import Checkpoint
from server.engine.batching import NO_BUDGET_YIELD_S
from server.engine.capacity import EventRate
from server.engine.executor import ForwardFn
from server.engine.misses import PredictionErrors
from tests.conftest import AppClient, FakeClock, ServeFactory, wait_until
from tests.server.engine.test_batching import CountingBody
from tests.server.helpers import (
    BLOCK,
    Recorder,
    check_answer,
    error_of,
    example,
    predicted,
    sample,
)
from tests.server.queues import batcher, metrics, post


@contextlib.asynccontextmanager
async def executor_held(
    serve: ServeFactory,
) -> AsyncIterator[tuple[AppClient, Recorder, FakeClock]]:
    """A server whose executor is held by a level-1 forward while the block runs; released
    (and that request answered 200) when it ends. The recorder holds the batches since;
    the engine's time moves when the test moves the clock."""
    recorder = Recorder({BLOCK: "block"})
    clock = FakeClock()
    client = await serve(forward_wrapper=recorder, clock=clock)
    recorder.clear()  # the warm-up's batches
    running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
    try:
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        yield client, recorder, clock
    finally:
        recorder.release.set()
    assert (await running).status_code == 200


async def test_the_queue_with_the_earliest_deadline_runs_first(serve: ServeFactory) -> None:
    """Queued in the order: level 4 without a budget (due ``NO_BUDGET_YIELD_S`` = 1 s after
    it was queued), level 2 due in 2 s, level 3 due in 0.5 s; served in the order 3, 4, 2
    once the executor is free (first come, first served would be 4, 2, 3)."""
    async with executor_held(serve) as (client, recorder, _):
        queued = []
        for i, query in enumerate(("?level=4", "?level=2&budget=2s", "?level=3&budget=500ms")):
            queued.append(post(client, "digits", example("digits", 60 + i), query))
            await wait_until(lambda n=i + 1: batcher(client).total_queued() == n, 10, "queued")
    assert [(await q).json()["level"] for q in queued] == [4, 2, 3]
    assert [level for _, level, _ in recorder.batches[1:]] == [3, 4, 2]


async def test_a_request_without_a_budget_yields_for_a_while_only(serve: ServeFactory) -> None:
    """Queued ``NO_BUDGET_YIELD_S`` before a request due in 5 s, a request without a budget
    is due first: it runs first."""
    async with executor_held(serve) as (client, recorder, clock):
        patient = post(client, "digits", example("digits", 70), "?level=4")
        await wait_until(lambda: batcher(client).total_queued() == 1, 10, "queued")
        clock.advance(NO_BUDGET_YIELD_S + 0.1)
        hurried = post(client, "digits", example("digits", 71), "?level=2&budget=5s")
        await wait_until(lambda: batcher(client).total_queued() == 2, 10, "queued")
    assert (await patient).status_code == (await hurried).status_code == 200
    assert [level for _, level, _ in recorder.batches[1:]] == [4, 2]


async def test_a_budget_the_queues_would_make_late_is_refused_before_its_body(
    serve: ServeFactory,
) -> None:
    """A forward running for another 0.2 s: a 90 ms budget would be late at every level, so
    it is 429 ``server_busy`` without its body read, on both front ends; 400 ms, and no
    budget, are served."""
    clock = FakeClock()
    client = await serve(clock=clock)
    service = client.app.state.runtime.service
    body = json.dumps({"inputs": example("digits", 80).tolist()}).encode()
    x = example("digits", 80)
    oip = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                    "data": x.ravel().tolist()}],
        "parameters": {"budget": "90ms"},
    }  # fmt: skip
    stream = CountingBody(body)
    service.batcher.busy_until = clock() + 0.2  # stands in for a long forward
    refused = await client.post(
        "/infer/digits?budget=90ms", content=stream, headers={"content-type": "application/json"}
    )
    assert error_of(refused)[:2] == (429, "server_busy")
    assert refused.headers["retry-after"] == "1"
    assert stream.pulled == 0
    v2 = await client.post("/v2/models/digits/infer", json=oip)
    assert v2.status_code == 429
    assert v2.headers["x-dvn-error-type"] == "server_busy"
    for query in ("?budget=400ms", ""):
        r = await client.post(
            f"/infer/digits{query}", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text
    service.batcher.busy_until = 0.0
    samples = await metrics(client)
    assert sample(samples, "dvn_requests_total", task="digits", level="none", outcome="rejected") == 2  # fmt: skip


class Threads:
    """A forward wrapper noting the thread each batch ran on."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, forward: ForwardFn) -> ForwardFn:
        def wrapped(task: int, level: int, inputs: np.ndarray) -> np.ndarray:
            self.names.append(threading.current_thread().name)
            return forward(task, level, inputs)

        return wrapped


@pytest.mark.parametrize(
    ("inline_ms", "thread"),
    [(100.0, threading.main_thread().name), (0.0, "dvn-executor_0")],
)
async def test_a_short_forward_on_an_idle_server_runs_on_the_event_loop(
    serve: ServeFactory, reference: Checkpoint, inline_ms: float, thread: str
) -> None:
    """One request at a time, every forward predicted under ``inline_forward_ms``: on the
    loop's thread (the test's main thread); with 0, on the executor's thread. Same answers."""
    threads = Threads()
    client = await serve(forward_wrapper=threads, inline_forward_ms=inline_ms)
    threads.names.clear()
    for level in (1, 4):
        x = example("digits", 90 + level)
        r = await client.post(f"/infer/digits?level={level}", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        check_answer(reference, r.json(), x[None])
    assert threads.names == [thread, thread]


async def test_a_forward_with_others_queued_runs_on_the_executor(serve: ServeFactory) -> None:
    """Level 2 predicted at 1 s (over the threshold) runs on the executor and is held
    there while a level-1 and a level-3 request queue. Then level 1 runs with level 3
    still queued: on the executor; level 3, with nothing behind it: on the loop."""
    recorder = Recorder({BLOCK: "block"})
    threads = Threads()
    client = await serve(forward_wrapper=lambda f: threads(recorder(f)), inline_forward_ms=100.0)
    threads.names.clear()
    with predicted(client, "digits", [2], seconds=1.0):
        try:
            held = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=2")
            await wait_until(recorder.entered.is_set, 10, "the held forward")
            first = post(client, "digits", example("digits", 96), "?level=1")
            await wait_until(lambda: batcher(client).total_queued() == 1, 10, "queued")
            second = post(client, "digits", example("digits", 97), "?level=3")
            await wait_until(lambda: batcher(client).total_queued() == 2, 10, "queued")
        finally:
            recorder.release.set()
        for r in (await held, await first, await second):
            assert r.status_code == 200, r.text
    executor, loop = "dvn-executor_0", threading.main_thread().name
    assert threads.names == [executor, executor, loop]


async def test_at_a_rate_the_executor_cannot_keep_up_with_budgets_go_to_level_1(
    client: AppClient,
) -> None:
    """A million examples a second arriving: no level keeps the executor under 0.7 busy, so
    a latency budget gets level 1; a request without one still gets the best level."""
    service = client.app.state.runtime.service
    service.forecast.arrivals = EventRate(tau_s=1e9, _rate=1e6)
    x = {"inputs": example("digits", 98).tolist()}
    timed = (await client.post("/infer/digits?budget=10s", json=x)).json()
    assert (timed["level"], timed["selection"]) == (1, "budget")
    assert (await client.post("/infer/digits", json=x)).json()["level"] == 4
    assert sample(await metrics(client), "dvn_level_ceiling", task="digits") == 1
    service.forecast.arrivals = EventRate()
    assert (await client.post("/infer/digits?budget=10s", json=x)).json()["level"] == 4
    assert sample(await metrics(client), "dvn_level_ceiling", task="digits") == 4


async def test_a_level_whose_answers_run_late_loses_budgeted_requests(client: AppClient) -> None:
    """Level 4's recent answers ran 20 s over their predictions: for a 10 s budget its
    chance is 0, so the most accurate other level is chosen. Other budgets and levels are
    unaffected."""
    service = client.app.state.runtime.service
    # remembered for an hour, so that a slow machine cannot age them out mid-test
    late = service.forecast.errors[("digits", 4)] = PredictionErrors(max_age_s=3600.0)
    for i in range(64):
        late.record(20.0 if i < 60 else 30.0)
    samples = await metrics(client)
    error = {q: sample(samples, "dvn_prediction_error_seconds", task="digits", level="4", q=q) for q in ("0.5", "0.95")}  # fmt: skip
    assert error == {"0.5": 20.0, "0.95": 30.0}
    assert sample(samples, "dvn_prediction_error_seconds", task="digits", level="3", q="0.5") == 0  # fmt: skip
    x = {"inputs": example("digits", 99).tolist()}
    assert (await client.post("/infer/digits?budget=10s", json=x)).json()["level"] == 3
    assert (await client.post("/infer/digits?budget=30s", json=x)).json()["level"] == 4
    assert (await client.post("/infer/digits", json=x)).json()["level"] == 4


async def test_one_forward_at_a_time_a_tight_request_waits_for_a_long_forward(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    """Level 4 predicted at 10 s holds the executor. A level-1 request due in 5 s and a
    level-2 request due in 60 s both wait for it (no second forward beside it: the express
    lane is gone, docs/decisions.md); then the tighter one goes first, on the same thread."""
    recorder = Recorder({BLOCK: "block"})
    threads = Threads()
    client = await serve(forward_wrapper=lambda f: threads(recorder(f)))
    threads.names.clear()
    recorder.clear()
    with predicted(client, "digits", [4], seconds=10.0):
        try:
            held = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=4")
            await wait_until(recorder.entered.is_set, 10, "the held forward")
            x = example("digits", 100)
            tight = post(client, "digits", x, "?level=1&budget=5s")
            patient = post(client, "digits", example("digits", 101), "?level=2&budget=60s")
            await wait_until(lambda: batcher(client).total_queued() == 2, 10, "queued")
            for _ in range(20):  # every loop turn the batcher would need to start one
                await asyncio.sleep(0)
            assert batcher(client).total_queued() == 2  # neither taken beside the held one
            assert not tight.done() and not patient.done()
        finally:
            recorder.release.set()
        answers = [await held, await tight, await patient]
        for r in answers:
            assert r.status_code == 200, r.text
        check_answer(reference, answers[1].json(), x[None])
    assert [level for _, level, _ in recorder.batches] == [4, 1, 2]
    assert threads.names == ["dvn-executor_0"] * 3
