"""``RemoteClient``, what the ZMQ and Ray engine clients share, over a fake transport: the
engine's status gates calls, refusals are counted and sent in bulk (before a scrape too),
the in-flight bound, and a reply made an answer or its error."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from model_store.checkpoint import Checkpoint
from server.engine import wire
from server.engine.client import EngineStatus
from server.engine.remote import RefusedCounts, RemoteClient
from server.errors import (
    BacklogShed,
    DeadlineExceeded,
    EngineUnavailable,
    InvalidInput,
    QueueFull,
    ServerBusy,
)


class Fake(RemoteClient):
    INFLIGHT_LIMIT = "{inflight} of {limit}"

    def __init__(self) -> None:
        super().__init__(
            None,  # type: ignore[arg-type]  # no manifest needed here
            {},
            max_inflight=2,
            status_interval_s=0.1,
            down_after_s=1.0,
            call_timeout_s=1.0,
        )
        self.calls: list[str] = []
        self.sent: list[RefusedCounts] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def infer(self, *args: Any) -> Any: ...

    def cancel(self, request_id: int) -> None: ...

    def admit(self, *args: Any) -> None: ...

    async def _call(self, method: wire.Method, args: dict[str, Any]) -> Any:
        self.calls.append(method)
        return {"method": method, **args}

    async def _send_refused(self, counts: RefusedCounts) -> None:
        self.calls.append("refused")
        self.sent.append(counts)


def up(client: Fake) -> Fake:
    client._status = EngineStatus.reported(
        {"ready": True, "loaded": True, "draining": False, "failed": None}
    )
    return client


async def test_a_call_needs_an_engine_that_is_up() -> None:
    client = Fake()
    with pytest.raises(EngineUnavailable) as info:
        await client.call("models")
    assert (info.value.status, info.value.headers()) == (503, {"Retry-After": "1"})
    assert client.calls == []
    assert await up(client).call("plan", task="digits") == {"method": "plan", "task": "digits"}


async def test_refusals_are_counted_and_sent_in_bulk_before_a_scrape() -> None:
    client = Fake()
    client.refused("digits", QueueFull("full"))
    client.refused("digits", QueueFull("full"))
    client.refused("digits", BacklogShed("late"))
    client.refused("shapes", DeadlineExceeded("late"))
    client.refused("shapes", InvalidInput("bad"))
    await client._flush_refused()  # the engine is down: kept for later
    assert client.sent == []
    await up(client).call("metrics")
    assert client.calls == ["refused", "metrics"]
    assert sorted(client.sent[0]) == [
        ("digits", "rejected", None, False, 2),
        ("digits", "rejected", None, True, 1),
        ("shapes", "invalid", None, False, 1),
        ("shapes", "rejected", "latency", False, 1),
    ]
    await client.call("metrics")  # nothing new to send
    assert client.calls == ["refused", "metrics", "metrics"]


def test_the_inflight_bound() -> None:
    client = Fake()
    client._take_slot()
    client.inflight = 2
    with pytest.raises(ServerBusy) as info:
        client._take_slot()
    assert (info.value.message, info.value.headers()) == ("2 of 2", {"Retry-After": "1"})


def test_a_reply_is_an_answer_or_its_error(reference: Checkpoint) -> None:
    client = Fake()
    request = wire.Infer(7, "digits", None, 2, "degrade", 0.25, "r-7", (), "float32")
    probs = np.full((3, 10), 0.1, np.float32)
    header = client._header(request, probs)
    assert (header.id, header.elapsed_s, header.shape) == (7, 0.25, (3, 10))
    entry = reference.manifest.task("digits")
    failed = wire.Failed(7, "invalid_input", "no", None)
    with pytest.raises(InvalidInput, match="no"):
        client._answer(failed, None, time.perf_counter(), entry, None)
    seen: list[float] = []
    client.observe_ipc = seen.append
    answered = wire.Answered(
        7, 2, [0, 1], "pinned", None, None, 0.001, 0.001, 0.0, 0.001, 0.0, (3, 10), "float32"
    )
    answer = client._answer(answered, probs, time.perf_counter(), entry, None)
    assert (answer.level, answer.units, answer.reason) == (2, [0, 1], "pinned")
    np.testing.assert_array_equal(answer.probabilities, probs)
    assert len(seen) == 1 and seen[0] >= 0.0
