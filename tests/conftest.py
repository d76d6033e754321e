"""Fixtures shared by every test package: a tiny deterministic DVN checkpoint and an
in-process server factory (the app's lifespan entered by hand, since ``httpx.ASGITransport``
does not run it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import torch
from fastapi import FastAPI

from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import save
from model_store.manifest import Accuracy
from model_store.model import DVN
from model_store.tasks import Preprocessing, TaskSpec
from server.engine.runtime import ForwardWrapper
from server.http.app import create_app
from server.settings import Settings

DIGITS = TaskSpec(
    name="digits",
    classes=tuple(str(d) for d in range(10)),
    input_shape=(1, 8, 8),
    preprocessing=Preprocessing(color_mode="L", size=(8, 8), mean=(0.5,), std=(0.25,)),
)
SHAPES = TaskSpec(
    name="shapes",
    classes=("circle", "square", "triangle", "cross", "ring", "star", "bar", "dot"),
    input_shape=(3, 16, 16),
    preprocessing=Preprocessing(
        color_mode="RGB", size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    ),
)
# Held-out accuracy rises with the level, as a trained DVN's does.
ACCURACY = {1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9}
READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights ``resnet-tiny`` DVN (4 units, 4 levels) over ``digits`` and
    ``shapes``, with non-trivial batch-norm statistics and manifest accuracies that rise
    with the level. Read-only: copy it to change it."""
    torch.manual_seed(0)
    config = DVNConfig.create(
        get_architecture("resnet-tiny"), (DIGITS, SHAPES), arch_name="resnet-tiny"
    )
    model = DVN(config)
    model.train()
    with torch.no_grad():
        for t, spec in enumerate(config.tasks):
            for level in range(1, config.num_levels + 1):
                for _ in range(3):
                    model(2.0 * torch.randn(16, *spec.input_shape) + 0.5, t, level)
    model.eval()
    out = tmp_path_factory.mktemp("server-ckpt") / "tiny"
    accuracy = {
        (spec.name, level): Accuracy(value=ACCURACY[level], examples=100, data="test")
        for spec in config.tasks
        for level in range(1, config.num_levels + 1)
    }
    save(model, out, name="tiny", version="0.0.1", accuracy=accuracy)
    return out


class AppClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` wired to one in-process app (``.app``)."""

    app: FastAPI


class FakeClock:
    """A clock the test moves (``advance``) for the engine (``serve(clock=...)``): deadlines
    pass, delays run out and rates decay when the test says, without sleeping. It starts
    at the real ``perf_counter``, and stands still otherwise."""

    def __init__(self) -> None:
        self.now = time.perf_counter()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ServeFactory(Protocol):
    def __call__(
        self,
        *,
        forward_wrapper: ForwardWrapper | None = ...,
        wait_ready: bool = ...,
        clock: FakeClock | None = ...,
        **overrides: Any,
    ) -> Awaitable[AppClient]: ...


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def server_settings(checkpoint: Path, **overrides: Any) -> Settings:
    """Settings for a test server: fast warm-up, small batches, one torch thread (the CI
    box is shared), a short drain."""
    values: dict[str, Any] = {
        "checkpoint": checkpoint,
        "profile_iters": 1,
        "max_batch_size": 8,
        "torch_threads": 1,
        "drain_timeout_s": 5.0,
        "device": "cpu",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def serve(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ServeFactory]:
    """Start in-process servers of ``tiny_checkpoint``: ``await serve(**settings_overrides,
    forward_wrapper=..., wait_ready=True, clock=None)`` returns an :class:`AppClient`. Every server is
    drained and stopped when the test ends. ``DVN_*`` variables of the outer environment
    are ignored."""
    for name in list(os.environ):
        if name.startswith("DVN_"):
            monkeypatch.delenv(name)
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            *,
            forward_wrapper: ForwardWrapper | None = None,
            wait_ready: bool = True,
            clock: FakeClock | None = None,
            **overrides: Any,
        ) -> AppClient:
            if forward_wrapper is not None:
                # A wrapped forward may block until the test releases it: on the event
                # loop's thread that would stall the test itself, and a request queued
                # behind it must stay queued. Tests of inline forwards ask for them.
                overrides.setdefault("inline_forward_ms", 0.0)
            app = create_app(
                server_settings(tiny_checkpoint, **overrides),
                forward_wrapper=forward_wrapper,
                clock=clock,
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            runtime = app.state.runtime
            if wait_ready:
                await wait_until(lambda: runtime.ready, READY_TIMEOUT_S, "warm-up")
            client = AppClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
            client.app = app
            await stack.enter_async_context(client)
            return client

        yield start


@pytest.fixture
async def client(serve: ServeFactory) -> AppClient:
    """A warmed-up server with the default test settings."""
    return await serve()
