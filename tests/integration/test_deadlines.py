"""Deadlines and disconnects against a real ``dvn serve``: requests queued behind a slow
batch whose latency budget runs out (``on_miss=reject``), or whose client goes away, cost no
forward pass. Proved from the server's own ``/metrics``: examples computed per unit, batch
sizes per level, outcomes.

The slow batch is one request of ``SLOW_EXAMPLES`` examples at level 4 of the slow-forward
checkpoint (conftest.py): a request larger than ``max_batch_size`` runs as one forward, of
about six seconds here, while the requests under test wait at level 2.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench._process import ServerProcess, dvn_serve
from tests.integration.conftest import Samples, by_label, scrape, total
from tests.server.helpers import npy_bytes

SLOW_EXAMPLES = 96
NPY = {"content-type": "application/x-npy"}
WAIT_S = 20.0


@pytest.fixture(scope="module")
def server(
    heavy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("deadlines") / "serve.log"
    env = {"DVN_MAX_BATCH_SIZE": "4", "DVN_TORCH_THREADS": "1", "DVN_MAX_REQUEST_BATCH": "128"}
    with dvn_serve(heavy_checkpoint, log, env=env) as process:
        yield process


def body(examples: int | None, seed: int) -> bytes:
    shape = (3, 32, 32) if examples is None else (examples, 3, 32, 32)
    return npy_bytes(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def post(server: ServerProcess, query: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/infer/heavy{query}", content=content, headers=NPY, timeout=60)


def plan(server: ServerProcess) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{server.url}/plan/heavy", timeout=30).json()
    return doc


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.02)


def queue_depth(server: ServerProcess, level: int) -> int:
    depth: int = plan(server)["levels"][level - 1]["queue_depth"]
    return depth


def forward_running(server: ServerProcess) -> bool:
    """Level 4's queue is empty and the executor is busy: the slow batch is in its forward
    (what is ahead of a new level-1 request is the running batch alone)."""
    levels = plan(server)["levels"]
    return levels[3]["queue_depth"] == 0 and levels[0]["queue_wait_ms"] > 100


class SlowBatch:
    """A ``SLOW_EXAMPLES``-example request at level 4, sent in a thread; entering returns
    once its forward runs."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.pool = ThreadPoolExecutor(1)
        self.response: Future[httpx.Response] | None = None

    def __enter__(self) -> SlowBatch:
        self.response = self.pool.submit(post, self.server, "?level=4", body(SLOW_EXAMPLES, seed=0))

        def running() -> bool:
            assert self.response is not None
            if self.response.done():  # answered before it was seen running: say how
                r = self.response.result()
                pytest.fail(f"the slow batch ended early: {r.status_code} {r.text[:300]}")
            return forward_running(self.server)

        wait_for(running, "the slow batch's forward")
        return self

    def still_running(self) -> bool:
        assert self.response is not None
        return not self.response.done()

    def __exit__(self, *exc: object) -> None:
        assert self.response is not None
        r = self.response.result(timeout=60)
        self.pool.shutdown()
        assert r.status_code == 200, r.text
        assert r.json()["level"] == 4


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def computed(samples: Samples) -> dict[str, int]:
    """Examples computed through each unit so far."""
    return dict(by_label(samples, "dvn_unit_examples_total", "unit"))


def raw_request(server: ServerProcess, query: str, content: bytes) -> socket.socket:
    """An HTTP/1.1 request written to a plain socket, whose answer is never read."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /infer/heavy{query} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/x-npy\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    sock.sendall(head.encode() + content)
    return sock


def test_a_client_that_disconnects_while_queued_costs_no_forward(server: ServerProcess) -> None:
    clients = 6
    before = scrape(server)
    with SlowBatch(server) as slow:
        sockets = [raw_request(server, "?level=2", body(None, seed=i)) for i in range(clients)]
        wait_for(lambda: queue_depth(server, 2) == clients, "the raw requests to be queued")
        for sock in sockets:
            sock.close()
        wait_for(
            lambda: (
                delta(before, scrape(server), "dvn_requests_total", outcome="cancelled") == clients
            ),
            "the server to notice the disconnects",
        )
        assert slow.still_running(), "the slow batch ended too soon for this test to mean much"
    wait_for(lambda: total(scrape(server), "dvn_inflight_requests") == 0, "in-flight to drain")
    after = scrape(server)
    # Only the slow batch was computed: SLOW_EXAMPLES through each of level 4's units, and
    # no level-2 batch at all.
    gained = {u: n - computed(before).get(u, 0) for u, n in computed(after).items()}
    assert gained == dict.fromkeys("0123", SLOW_EXAMPLES)
    assert delta(before, after, "dvn_batch_size_count", level="2") == 0
    # The next level-2 request is computed alone: the abandoned ones were dropped.
    r = post(server, "?level=2", body(None, seed=99))
    assert r.status_code == 200, r.text
    final = scrape(server)
    assert delta(after, final, "dvn_batch_size_count", level="2") == 1
    assert delta(after, final, "dvn_batch_size_sum", level="2") == 1


DEADLINE_EXCEEDED = re.compile(
    r"the latency budget of this task 'heavy' request ran out \d+\.\d ms ago while it was "
    r"queued; not computed \(nothing is computed after its deadline\): retry with a larger "
    r"budget, or none"
)
UNMEETABLE = re.compile(
    r"no level of task 'heavy' can answer within 300 ms now \(the fastest is predicted at "
    r"\d+\.\d ms\); retry later, raise the budget, or use on_miss=degrade to get the smallest "
    r"level anyway"
)


def test_a_request_whose_deadline_passed_in_the_queue_is_not_computed(
    server: ServerProcess,
) -> None:
    late, patient = 4, 3
    before = scrape(server)
    with SlowBatch(server) as slow, ThreadPoolExecutor(late + patient) as pool:
        # Admitted (a pinned level is not refused for latency), then out of time in the
        # queue: never computed, whether they asked to be rejected or degraded.
        queries = ["?level=2&budget=300ms&on_miss=reject", "?level=2&budget=300ms"]
        rejecting = [pool.submit(post, server, queries[i % 2], body(None, i)) for i in range(late)]
        waiting = [
            pool.submit(post, server, "?level=2", body(None, 10 + i)) for i in range(patient)
        ]
        wait_for(lambda: queue_depth(server, 2) == late + patient, "the requests to queue")
        # Not pinned: refused at once, since the running batch alone outlasts the budget.
        r = post(server, "?budget=300ms&on_miss=reject", body(None, 20))
        assert slow.still_running(), "the slow batch ended too soon for this test to mean much"
        doc = r.json()
        assert (r.status_code, doc["error"]["type"]) == (503, "deadline_unmeetable")
        assert UNMEETABLE.fullmatch(doc["error"]["message"]), doc
        assert int(r.headers["retry-after"]) >= 1
        for f in rejecting:
            r = f.result(timeout=60)
            doc = r.json()
            assert (r.status_code, doc["error"]["type"]) == (504, "deadline_exceeded"), doc
            assert DEADLINE_EXCEEDED.fullmatch(doc["error"]["message"]), doc
        for f in waiting:
            r = f.result(timeout=60)
            assert (r.status_code, r.json()["level"]) == (200, 2)
    wait_for(lambda: total(scrape(server), "dvn_inflight_requests") == 0, "in-flight to drain")
    after = scrape(server)
    # Computed: the slow batch at level 4 (units 0-3) and the patient requests at level 2
    # (its two units); the late ones never.
    units2 = {str(u) for u in plan(server)["levels"][1]["units"]}
    gained = {u: n - computed(before).get(u, 0) for u, n in computed(after).items()}
    assert gained == {u: SLOW_EXAMPLES + (patient if u in units2 else 0) for u in "0123"}
    assert delta(before, after, "dvn_batch_size_sum", level="2") == patient
    missed = {"kind": "latency", "result": "missed"}
    assert delta(before, after, "dvn_budget_total", **missed) == late + 1
    outcomes = by_label(after, "dvn_requests_total", "outcome")
    outcomes.subtract(by_label(before, "dvn_requests_total", "outcome"))
    assert +outcomes == {"ok": 1 + patient, "rejected": late + 1}
