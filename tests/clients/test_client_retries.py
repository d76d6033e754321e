"""DVNClient's retries against httpx.MockTransport fakes: 429 and Retry-After, bounded
backoff, connection errors (GET retried, POST not), timeouts."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from clients import errors
from clients.client import DVNClient
from tests.clients.fakes import (
    MODELS_RESPONSE,
    URL,
    Recorder,
    error_response,
    ok,
)
from tests.clients.mock_client import client_for


def test_429_with_retry_after_is_retried_then_succeeds(sleeps: list[float]) -> None:
    busy = error_response(429, "queue_full", "queue full", retry_after="1")
    fake = Recorder(busy, busy, ok())
    with client_for(fake, backoff=0.1) as dvn:
        result = dvn.infer("digits", np.zeros((1, 8, 8), np.float32), budget="5ms")
    assert result.level == 2
    assert len(fake.requests) == 3
    assert sleeps == [0.1, 0.2]  # min(Retry-After 1 s, 0.1 * 2**n)
    assert all(r.content == fake.requests[0].content for r in fake.requests)


def test_retry_after_smaller_than_backoff_wins(sleeps: list[float]) -> None:
    fake = Recorder(error_response(503, "not_ready", "warming up", retry_after="0.05"), ok())
    with client_for(fake, backoff=1.0) as dvn:
        dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert sleeps == [0.05]


def test_retries_are_bounded(sleeps: list[float]) -> None:
    fake = Recorder(error_response(503, "not_ready", "warming up", retry_after="2"))
    with (
        client_for(fake, max_retries=2, backoff=0.5) as dvn,
        pytest.raises(errors.NotReadyError, match="warming up") as caught,
    ):
        dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert len(fake.requests) == 3
    assert sleeps == [0.5, 1.0]
    assert caught.value.retry_after == 2.0


@pytest.mark.parametrize(
    "response",
    [
        error_response(400, "invalid_input", "bad shape"),
        error_response(429, "queue_full", "full, no Retry-After"),
        error_response(500, "inference_failed", "batch failed"),
        error_response(504, "deadline_exceeded", "too late", retry_after="1"),
    ],
)
def test_other_errors_are_not_retried(response: httpx.Response, sleeps: list[float]) -> None:
    fake = Recorder(response, ok())
    with client_for(fake) as dvn, pytest.raises(errors.DVNError):
        dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert len(fake.requests) == 1 and sleeps == []


def test_connection_error_on_get_is_retried(sleeps: list[float]) -> None:
    fake = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=MODELS_RESPONSE))
    with client_for(fake, backoff=0.25) as dvn:
        assert dvn.models().name == "demo"
    assert len(fake.requests) == 2 and sleeps == [0.25]


def test_connection_error_on_post_is_not_retried(sleeps: list[float]) -> None:
    fake = Recorder(httpx.ConnectError("refused"), ok())
    with (
        client_for(fake) as dvn,
        pytest.raises(
            errors.ConnectionFailedError, match=r"POST http://dvn.test/infer/digits: cannot reach"
        ) as caught,
    ):
        dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert len(fake.requests) == 1 and sleeps == []
    assert caught.value.type == "connection" and caught.value.status is None


def test_connection_errors_on_get_are_bounded(sleeps: list[float]) -> None:
    fake = Recorder(httpx.ConnectError("refused"))
    with (
        client_for(fake, max_retries=3, backoff=0.1) as dvn,
        pytest.raises(errors.ConnectionFailedError),
    ):
        dvn.models()
    assert len(fake.requests) == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_read_timeout_is_a_timeout_error_and_not_retried(sleeps: list[float]) -> None:
    fake = Recorder(httpx.ReadTimeout("slow"))
    with client_for(fake) as dvn, pytest.raises(errors.RequestTimeoutError) as caught:
        dvn.models()
    assert caught.value.type == "timeout" and len(fake.requests) == 1 and sleeps == []


def test_negative_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        DVNClient(URL, max_retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        DVNClient(URL, backoff=-0.1)
