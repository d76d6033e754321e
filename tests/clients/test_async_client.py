"""AsyncDVNClient: the same contract as DVNClient, through the same fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import clients.async_client
from clients import errors
from clients.async_client import AsyncDVNClient
from tests.clients.fakes import (
    CHECKPOINT_FILES,
    ERROR_CASES,
    MODELS_RESPONSE,
    PLAN_RESPONSE,
    URL,
    Recorder,
    decode_npy,
    error_response,
    make_tar,
    ok,
    tar_response,
)


def client_for(handler: Recorder, **kwargs: object) -> AsyncDVNClient:
    return AsyncDVNClient(URL, transport=handler.transport, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(clients.async_client, "_sleep", record)
    return waits


async def test_infer_sends_npy_with_params_and_parses() -> None:
    fake = Recorder(ok())
    x = torch.randn(3, 1, 8, 8)
    async with client_for(fake, api_key="k") as dvn:
        result = await dvn.infer("digits", x, budget="2MiB", top_k=2)
    (request,) = fake.requests
    assert request.url.path == "/infer/digits"
    assert dict(request.url.params) == {"budget": "2MiB", "top_k": "2"}
    assert request.headers["Content-Type"] == "application/x-npy"
    assert request.headers["Authorization"] == "Bearer k"
    np.testing.assert_array_equal(decode_npy(request), x.numpy())
    assert result.level == 2 and result.predictions[0].class_name == "3"


@pytest.mark.parametrize(("status", "type_", "cls"), ERROR_CASES)
async def test_error_types(
    status: int, type_: str, cls: type[errors.DVNError], sleeps: list[float]
) -> None:
    fake = Recorder(error_response(status, type_, f"the server says {type_}"))
    async with client_for(fake) as dvn:
        with pytest.raises(cls) as caught:
            await dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert type(caught.value) is cls
    assert (caught.value.message, caught.value.status) == (f"the server says {type_}", status)
    assert len(fake.requests) == 1 and sleeps == []


async def test_retry_after_then_success_and_bound(sleeps: list[float]) -> None:
    busy = error_response(429, "queue_full", "queue full", retry_after="3")
    fake = Recorder(busy, ok())
    async with client_for(fake, backoff=0.2) as dvn:
        assert (await dvn.infer("digits", np.zeros((1, 8, 8), np.float32))).level == 2
    assert len(fake.requests) == 2 and sleeps == [0.2]

    sleeps.clear()
    always_busy = Recorder(busy)
    async with client_for(always_busy, max_retries=1, backoff=0.2) as dvn:
        with pytest.raises(errors.QueueFullError, match="queue full"):
            await dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert len(always_busy.requests) == 2 and sleeps == [0.2]


async def test_400_is_not_retried_and_post_connection_error_is_not(sleeps: list[float]) -> None:
    bad = Recorder(error_response(400, "invalid_input", "wrong shape"), ok())
    refused = Recorder(httpx.ConnectError("refused"), ok())
    async with client_for(bad) as dvn:
        with pytest.raises(errors.InvalidInputError, match="wrong shape"):
            await dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    async with client_for(refused) as dvn:
        with pytest.raises(errors.ConnectionFailedError):
            await dvn.infer("digits", np.zeros((1, 8, 8), np.float32))
    assert len(bad.requests) == 1 and len(refused.requests) == 1 and sleeps == []


async def test_get_connection_error_is_retried(sleeps: list[float]) -> None:
    fake = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=MODELS_RESPONSE))
    async with client_for(fake, backoff=0.3) as dvn:
        assert [t.name for t in (await dvn.models()).tasks] == ["digits", "shapes"]
    assert sleeps == [0.3]


async def test_plan() -> None:
    fake = Recorder(httpx.Response(200, json=PLAN_RESPONSE))
    async with client_for(fake) as dvn:
        plan = await dvn.plan("digits", "15ms")
    assert plan.level == 1 and dict(fake.requests[0].url.params) == {"budget": "15ms"}


async def test_export_verifies_and_refuses(tmp_path: Path) -> None:
    good = Recorder(tar_response(make_tar(CHECKPOINT_FILES)))
    async with client_for(good) as dvn:
        path = await dvn.export("digits", level=1, out_dir=tmp_path / "a")
    assert sorted(p.name for p in path.iterdir()) == sorted(CHECKPOINT_FILES)

    tampered = Recorder(tar_response(make_tar(CHECKPOINT_FILES), sha256="f" * 64))
    traversal = Recorder(tar_response(make_tar({"../../evil": b"x"})))
    for fake, match in ((tampered, "damaged"), (traversal, "outside")):
        async with client_for(fake) as dvn:
            with pytest.raises(errors.ArchiveError, match=match):
                await dvn.export("digits", level=1, out_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()


async def test_probes() -> None:
    async with client_for(Recorder(httpx.Response(200, json={"status": "alive"}))) as dvn:
        assert await dvn.healthy() is True
    not_ready = Recorder(error_response(503, "not_ready", "draining", retry_after="1"))
    async with client_for(not_ready) as dvn:
        assert await dvn.ready() is False
    async with client_for(Recorder(httpx.ConnectError("refused"))) as dvn:
        assert await dvn.healthy() is False


async def test_concurrent_requests_share_one_client() -> None:
    fake = Recorder(ok())
    async with client_for(fake) as dvn:
        results = await asyncio.gather(
            *(dvn.infer("digits", np.full((1, 8, 8), i, np.float32)) for i in range(8))
        )
    assert len(results) == 8
    assert sorted(float(decode_npy(r)[0, 0, 0]) for r in fake.requests) == list(range(8))
