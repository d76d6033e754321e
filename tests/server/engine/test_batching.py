"""Concurrency, batching, failure isolation, queue bounds and the deadline re-check, in
process, with fault-injecting forwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import numpy as np
import pytest

from model_store.checkpoint import Checkpoint
from tests.conftest import ServeFactory, wait_until
from tests.server.helpers import (
    BLOCK,
    MARK,
    Recorder,
    check_answer,
    error_of,
    example,
    holds,
    sample,
    series,
)
from tests.server.messages import (
    BATCH_FAILED,
    INFLIGHT_LIMIT,
    NON_FINITE_OUTPUT,
    PINNED_QUEUE_FULL,
    QUEUES_FULL,
)
from tests.server.queues import SHAPES, batcher, metrics, post, queued


async def test_64_concurrent_requests_batch_and_each_gets_its_own_answer(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    recorder = Recorder()
    client = await serve(forward_wrapper=recorder)
    recorder.clear()  # forget warm-up
    digits = reference.manifest.task("digits").levels
    queries = ["", "?level=1", "?level=2", "?level=4", f"?budget={digits[2].param_bytes}B"]
    sent: list[tuple[str, np.ndarray, str]] = []
    for i in range(64):
        task = "digits" if i % 2 else "shapes"
        query = queries[i % len(queries)]
        if task == "shapes" and "budget" in query:
            query = "?level=3"
        x = example(task, 100 + i, batch=1 + i % 3)
        sent.append((task, x, query))
    responses = await asyncio.gather(*(post(client, t, x, q) for t, x, q in sent))
    for (task, x, query), r in zip(sent, responses, strict=True):
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["task"] == task
        want = {"": 4, "?level=1": 1, "?level=2": 2, "?level=3": 3, "?level=4": 4}.get(query, 3)
        assert doc["level"] == want
        check_answer(reference, doc, x)
    samples = await metrics(client)
    batches = series(samples, "dvn_batch_size_count")
    examples = series(samples, "dvn_batch_size_sum")
    assert sum(examples.values()) == sum(x.shape[0] for _, x, _ in sent)
    # Batches formed: fewer forwards than requests, and the histogram counts each one.
    assert sum(batches.values()) == len(recorder.batches) < 64
    assert max(x.shape[0] for _, _, x in recorder.batches) > 3  # more than one request
    assert all(x.shape[0] <= 8 for _, _, x in recorder.batches)  # max_batch_size
    assert sample(samples, "dvn_requests_total", task="digits", level="4", outcome="ok") == 13


async def test_a_failing_batch_fails_only_its_own_requests(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    recorder = Recorder({BLOCK: "block", MARK: "raise"})
    client = await serve(forward_wrapper=recorder)
    try:
        blocker = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=4")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        # Queued behind it: a marked request and an unmarked one at shapes level 1 (one
        # batch), and others at other levels.
        bad = post(client, "shapes", example("shapes", 1, mark=MARK), "?level=1")
        await queued(client, "shapes", 1, 1)
        mate_x = example("shapes", 2, batch=2)
        mate = post(client, "shapes", mate_x, "?level=1")
        await queued(client, "shapes", 1, 2)
        others_x = [example("digits", 10 + i) for i in range(4)] + [example("shapes", 20)]
        others = [
            post(client, "digits", x, f"?level={1 + i % 3}") for i, x in enumerate(others_x[:4])
        ] + [post(client, "shapes", others_x[4], "?level=2")]
        await wait_until(lambda: batcher(client).total_queued() == 7, 10, "queues")
    finally:
        recorder.release.set()
    message = BATCH_FAILED.format(
        size=3, task="shapes", level=1, error="RuntimeError: injected fault"
    )
    assert error_of(await bad) == (500, "inference_failed", message)
    assert error_of(await mate) == (500, "inference_failed", message)
    for x, task in zip(others_x, ["digits"] * 4 + ["shapes"], strict=True):
        r = await others.pop(0)
        assert (r.status_code, r.json()["task"]) == (200, task)
        check_answer(reference, r.json(), x[None])
    assert (await blocker).status_code == 200
    # The server keeps serving that level afterwards.
    after = await client.post("/infer/shapes?level=1", json={"inputs": mate_x.tolist()})
    assert after.status_code == 200
    check_answer(reference, after.json(), mate_x)
    samples = await metrics(client)
    assert series(samples, "dvn_batch_failures_total") == {
        (("level", "1"), ("task", "shapes")): 1.0
    }
    assert sample(samples, "dvn_requests_total", task="shapes", level="none", outcome="error") == 2
    assert sample(samples, "dvn_requests_total", task="shapes", level="1", outcome="ok") == 1
    # A failed batch computes nothing through the units.
    assert sample(samples, "dvn_batch_size_count", task="shapes", level="1") == 1


@pytest.mark.parametrize("action", ["nan_input", "nan_output"])
async def test_non_finite_output_is_an_inference_failure(
    serve: ServeFactory, reference: Checkpoint, action: str
) -> None:
    client = await serve(forward_wrapper=Recorder({MARK: action}))
    x = example("digits", 3, batch=2, mark=MARK)
    r = await client.post("/infer/digits?level=2", json={"inputs": x.tolist()})
    failed = BATCH_FAILED.format(size=2, task="digits", level=2, error=NON_FINITE_OUTPUT)
    assert error_of(r) == (500, "inference_failed", failed)
    good = example("digits", 4, batch=2)
    r = await client.post("/infer/digits?level=2", json={"inputs": good.tolist()})
    assert r.status_code == 200
    check_answer(reference, r.json(), good)
    samples = await metrics(client)
    assert sample(samples, "dvn_batch_failures_total", task="digits", level="2") == 1
    assert sample(samples, "dvn_requests_total", task="digits", level="none", outcome="error") == 1


async def test_bounded_queues_degrade_then_refuse(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    recorder = Recorder({BLOCK: "block"})
    client = await serve(forward_wrapper=recorder, max_queue_size=1)
    levels = reference.manifest.task("digits").levels
    xs = [example("digits", 30 + i) for i in range(6)]
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        waiting = post(client, "digits", xs[0], "?level=1")
        await queued(client, "digits", 1, 1)
        # Pinned to a full queue: 429.
        r = await client.post("/infer/digits?level=1", json={"inputs": xs[1].tolist()})
        full = PINNED_QUEUE_FULL.format(task="digits", level=1)
        assert error_of(r) == (429, "queue_full", full)
        assert r.headers["retry-after"] == "1"
        top = post(client, "digits", xs[2], "?level=4")
        await queued(client, "digits", 4, 1)
        # Unpinned: the best level's queue is full, the next best has room.
        degraded = post(client, "digits", xs[3])
        await queued(client, "digits", 3, 1)
        # Only level 1 fits this memory budget, and its queue is full: 429.
        r = await client.post(
            f"/infer/digits?budget={levels[0].param_bytes}B", json={"inputs": xs[4].tolist()}
        )
        assert error_of(r) == (429, "queue_full", QUEUES_FULL.format(task="digits"))
        assert r.headers["retry-after"] == "1"
        plan = (await client.get("/plan/digits")).json()
        assert (plan["level"], plan["selection"]) == (2, "degraded")  # 4 and 3 are full now
        assert [lv["queue_depth"] for lv in plan["levels"]] == [1, 0, 1, 1]
        samples = await metrics(client)
        assert sample(samples, "dvn_queue_depth", task="digits", level="4") == 1
        assert sample(samples, "dvn_queue_capacity", task="digits", level="4") == 1
        assert sample(samples, "dvn_inflight_requests") == 4
    finally:
        recorder.release.set()
    for task, x, level, reason in (
        (running, None, 1, "pinned"),
        (waiting, xs[0], 1, "pinned"),
        (top, xs[2], 4, "pinned"),
        (degraded, xs[3], 3, "degraded"),
    ):
        r = await task
        assert r.status_code == 200
        doc = r.json()
        assert (doc["level"], doc["selection"]) == (level, reason)
        if x is not None:
            check_answer(reference, doc, x[None])
    samples = await metrics(client)
    assert sample(samples, "dvn_level_selected_total", task="digits", level="3", reason="degraded") == 1  # fmt: skip
    assert sample(samples, "dvn_requests_total", task="digits", level="none", outcome="rejected") == 2  # fmt: skip
    assert sample(samples, "dvn_inflight_requests") == 0
    assert sample(samples, "dvn_queue_depth", task="digits", level="1") == 0


class CountingBody:
    """A streamed request body that counts the chunks the server pulled."""

    def __init__(self, data: bytes, chunk: int = 64) -> None:
        self.data, self.chunk, self.pulled = data, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), self.chunk):
            self.pulled += 1
            yield self.data[i : i + self.chunk]


BUSY = INFLIGHT_LIMIT.format(inflight=2, limit=2)


async def test_inflight_bound_refuses_before_reading_the_body(serve: ServeFactory) -> None:
    """``max_inflight`` requests in flight (one computing, one queued): the next one, on
    either front end, is 429 ``server_busy`` with ``Retry-After`` without a byte of its body
    read, counted as rejected; once they are answered, requests are served again."""
    recorder = Recorder({BLOCK: "block"})
    client = await serve(forward_wrapper=recorder, max_inflight=2)
    x = example("digits", 45)
    body = json.dumps({"inputs": x.tolist()}).encode()
    oip_body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                     "data": x.ravel().tolist()}]}
    ).encode()  # fmt: skip
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        waiting = post(client, "digits", x, "?level=2")
        await queued(client, "digits", 2, 1)
        streams = [CountingBody(body), CountingBody(oip_body)]
        v1 = await client.post(
            "/infer/digits", content=streams[0], headers={"content-type": "application/json"}
        )
        v2 = await client.post(
            "/v2/models/digits/infer",
            content=streams[1],
            headers={"content-type": "application/json"},
        )
    finally:
        recorder.release.set()
    assert error_of(v1) == (429, "server_busy", BUSY)
    assert (v2.status_code, v2.json()) == (429, {"error": BUSY})
    assert v2.headers["x-dvn-error-type"] == "server_busy"
    assert v1.headers["retry-after"] == v2.headers["retry-after"] == "1"
    assert [s.pulled for s in streams] == [0, 0]
    assert (await running).status_code == (await waiting).status_code == 200
    read = CountingBody(body)  # the same body, admitted now: read and answered
    again = await client.post("/infer/digits", content=read, headers={"content-type": "application/json"})  # fmt: skip
    assert again.status_code == 200, again.text
    assert read.pulled == len(streams[0].data) // 64 + 1
    samples = await metrics(client)
    assert sample(samples, "dvn_requests_total", task="digits", level="none", outcome="rejected") == 2  # fmt: skip
    assert sample(samples, "dvn_inflight_requests") == 0


async def test_request_larger_than_max_batch_size_runs_as_one_forward(
    serve: ServeFactory, reference: Checkpoint
) -> None:
    recorder = Recorder()
    client = await serve(forward_wrapper=recorder, max_batch_size=4)
    recorder.clear()
    x = example("shapes", 50, batch=10)
    r = await client.post("/infer/shapes?level=2", json={"inputs": x.tolist()})
    assert r.status_code == 200
    check_answer(reference, r.json(), x)
    assert [(t, lv, b.shape[0]) for t, lv, b in recorder.batches] == [(SHAPES, 2, 10)]


async def test_a_client_that_goes_away_is_dropped_uncomputed(serve: ServeFactory) -> None:
    recorder = Recorder({BLOCK: "block"})
    client = await serve(forward_wrapper=recorder)
    app = client.app
    body = json.dumps({"inputs": example("digits", 1, mark=MARK).tolist()}).encode()
    gone = asyncio.Event()
    incoming: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/infer/digits", "raw_path": b"/infer/digits",
        "query_string": b"level=2", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"),
                    (b"x-request-id", b"gone-1")],
    }  # fmt: skip
    try:
        running = post(client, "digits", example("digits", 0, mark=BLOCK), "?level=1")
        await wait_until(recorder.entered.is_set, 10, "the blocking forward")
        call = asyncio.create_task(app(scope, receive, send))
        await queued(client, "digits", 2, 1)
        gone.set()
        await asyncio.wait_for(call, 10)  # answered, not raised (uvicorn would log an error)
    finally:
        recorder.release.set()
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 499
    assert (b"x-request-id", b"gone-1") in sent[0]["headers"]
    assert (await running).status_code == 200
    # The batcher skips it: the next request at that level is computed alone.
    r = await client.post("/infer/digits?level=2", json={"inputs": example("digits", 2).tolist()})
    assert r.status_code == 200
    assert recorder.seen(holds(MARK)) == []
    samples = await metrics(client)
    assert sample(samples, "dvn_inflight_requests") == 0
    assert sample(samples, "dvn_batch_size_sum", task="digits", level="2") == 1
