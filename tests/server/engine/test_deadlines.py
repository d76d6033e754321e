"""The deadline re-check when a batch forms, in process, with fault-injecting forwards:
nothing is computed after its deadline; before it, reject fails and degrade moves. Time
passes when a test moves the engine's clock (``FakeClock``), never by sleeping."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.checkpoint import Checkpoint
from tests.conftest import AppClient, FakeClock, ServeFactory, wait_until
from tests.server.helpers import (
    BLOCK,
    MARK,
    Recorder,
    check_answer,
    error_of,
    example,
    holds,
    predicted,
    sample,
)
from tests.server.messages import MEASURED, PREDICTED_LATE, RAN_OUT, matching
from tests.server.queues import DIGITS, batcher, metrics, post, queued

OVERDUE = matching(RAN_OUT, task="digits", late_ms=MEASURED)


async def one_missed_and_refused(client: AppClient) -> None:
    """``/metrics`` counts exactly one missed latency budget and one refused request."""
    samples = await metrics(client)
    assert sample(samples, "dvn_budget_total", task="digits", kind="latency", result="missed") == 1
    assert sample(samples, "dvn_requests_total", task="digits", level="none", outcome="rejected") == 1  # fmt: skip


async def test_deadline_rechecked_when_the_batch_forms(serve: ServeFactory) -> None:
    recorder = Recorder({BLOCK: "block"})
    clock = FakeClock()
    client = await serve(forward_wrapper=recorder, clock=clock)
    late_x = example("digits", 40, mark=MARK)
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        clock.advance(0.1)  # past the running forward's predicted end
        late = post(client, "digits", late_x, "?budget=250ms&on_miss=reject")
        await wait_until(lambda: batcher(client).total_queued() == 1, 10, "queued")
        clock.advance(0.3)  # the deadline passes while it waits
    finally:
        recorder.release.set()
    status, kind, message = error_of(await late)
    assert (status, kind) == (504, "deadline_exceeded")
    assert OVERDUE.fullmatch(message), message
    assert (await running).status_code == 200
    assert recorder.seen(holds(MARK)) == []  # never computed
    await one_missed_and_refused(client)


async def test_the_deadline_is_checked_per_request_of_a_batch(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    """One queue holding requests out of time (on_miss=reject), in time, and without a
    budget: the batch that forms computes exactly the ones that can still be answered."""
    recorder = Recorder({BLOCK: "block"})
    clock = FakeClock()
    client = await serve(forward_wrapper=recorder, clock=clock)
    late_xs = [example("digits", 60 + i, mark=MARK) for i in range(2)]
    kept = [  # (query, input): no budget, and a budget it can still meet
        ("", example("digits", 62)),
        ("?budget=30s&on_miss=reject", example("digits", 63)),
        ("", example("digits", 64)),
    ]
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        clock.advance(0.1)  # past the running forward's predicted end
        late = [post(client, "digits", x, "?budget=250ms&on_miss=reject") for x in late_xs[:1]]
        await queued(client, "digits", 4, 1)
        kept_calls = [post(client, "digits", kept[0][1], kept[0][0])]
        await queued(client, "digits", 4, 2)
        late.append(post(client, "digits", late_xs[1], "?budget=250ms&on_miss=reject"))
        await queued(client, "digits", 4, 3)
        kept_calls += [post(client, "digits", x, q) for q, x in kept[1:]]
        await queued(client, "digits", 4, 5)
        recorder.clear()
        clock.advance(0.3)  # the 250 ms deadlines pass while they wait
    finally:
        recorder.release.set()
    assert (await running).status_code == 200
    for call in late:
        status, kind, message = error_of(await call)
        assert (status, kind) == (504, "deadline_exceeded")
        assert OVERDUE.fullmatch(message), message
    for (query, x), call in zip(kept, kept_calls, strict=True):
        r = await call
        assert r.status_code == 200, (query, r.text)
        assert r.json()["level"] == 4
        check_answer(reference, r.json(), x[None])
    # One batch at level 4, of the three kept requests in arrival order; no late one in it.
    assert [(t, lv) for t, lv, _ in recorder.batches] == [(DIGITS, 4)]
    np.testing.assert_array_equal(recorder.batches[0][2], np.stack([x for _, x in kept]))
    assert recorder.seen(holds(MARK)) == []
    samples = await metrics(client)
    assert sample(samples, "dvn_batch_size_sum", task="digits", level="4") == 3
    assert sample(samples, "dvn_budget_total", task="digits", kind="latency", result="missed") == 2
    assert sample(samples, "dvn_budget_total", task="digits", kind="latency", result="met") == 1


@pytest.mark.parametrize("query", ["?budget=250ms", "?level=3&budget=250ms"])
async def test_overdue_request_is_never_computed_even_with_degrade(
    serve: ServeFactory, query: str
) -> None:
    """Its deadline passed while it waited: an answer now could only be late, so it is not
    computed at any level (504), degrade or pinned alike."""
    recorder = Recorder({BLOCK: "block"})
    clock = FakeClock()
    client = await serve(forward_wrapper=recorder, clock=clock)
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=2")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        clock.advance(0.1)  # past the running forward's predicted end
        late = post(client, "digits", example("digits", 41, mark=MARK), query)
        await wait_until(lambda: batcher(client).total_queued() == 1, 10, "queued")
        clock.advance(0.3)  # the deadline passes while it waits
    finally:
        recorder.release.set()
    status, kind, message = error_of(await late)
    assert (status, kind) == (504, "deadline_exceeded")
    assert OVERDUE.fullmatch(message), message
    assert recorder.seen(holds(MARK)) == []
    assert (await running).status_code == 200
    await one_missed_and_refused(client)


async def test_request_its_level_cannot_make_in_time_degrades_before_the_deadline(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    """Queued at level 4, which is then predicted too slow for the time left: moved to the
    largest smaller level predicted in time, computed there (once), budget met."""
    recorder = Recorder({BLOCK: "block"})
    client = await serve(forward_wrapper=recorder)
    x = example("digits", 43, mark=MARK)
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        pending = post(client, "digits", x, "?budget=20s")
        await queued(client, "digits", 4, 1)
    finally:
        with predicted(client, "digits", range(3, 5), 60.0):  # levels 3, 4: a minute each
            recorder.release.set()
            r = await pending
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["level"], doc["selection"], doc["budget"]["met"]) == (2, "degraded", True)
    check_answer(reference, doc, x[None])
    assert recorder.seen(holds(MARK)) == [(DIGITS, 2)]  # computed once, at level 2
    assert (await running).status_code == 200
    samples = await metrics(client)
    assert sample(samples, "dvn_level_selected_total", task="digits", level="2", reason="degraded") == 1  # fmt: skip


@pytest.mark.parametrize(
    ("query", "status", "level"),
    [("?level=3&budget=20s", 200, 3), ("?budget=20s&on_miss=reject", 504, None)],
)
async def test_predicted_late_before_the_deadline_pinned_is_served_reject_is_not(
    serve: ServeFactory, query: str, status: int, level: int | None
) -> None:
    recorder = Recorder({BLOCK: "block"})
    client = await serve(forward_wrapper=recorder)
    queued_at = 3 if "level=3" in query else 4
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        pending = post(client, "digits", example("digits", 44, mark=MARK), query)
        await queued(client, "digits", queued_at, 1)
    finally:
        with predicted(client, "digits", range(1, 5), 60.0):  # no level in time
            recorder.release.set()
            r = await pending
    assert r.status_code == status, r.text
    if level is not None:  # pinned with degrade: its level, reported as it turned out
        assert (r.json()["level"], r.json()["selection"]) == (level, "pinned")
        assert recorder.seen(holds(MARK)) == [(DIGITS, level)]
    else:
        _, kind, message = error_of(r)
        assert kind == "deadline_exceeded"
        late = matching(
            PREDICTED_LATE, task="digits", left_ms=MEASURED, level=4, predicted_ms="60000.0"
        )
        assert late.fullmatch(message), message
        assert recorder.seen(holds(MARK)) == []
    assert (await running).status_code == 200
