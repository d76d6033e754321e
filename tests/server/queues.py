"""Helpers of the in-process batching and deadline tests: requests sent in the
background, the app's batcher and its queues, its metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from server.engine.batching import Batcher
from tests.conftest import AppClient, wait_until
from tests.server.helpers import parse_metrics

DIGITS, SHAPES = 0, 1  # task indices


def post(
    client: AppClient, task: str, x: np.ndarray, query: str = ""
) -> asyncio.Task[httpx.Response]:
    """Send in the background; the request is on its way once the loop runs."""
    return asyncio.create_task(client.post(f"/infer/{task}{query}", json={"inputs": x.tolist()}))


async def metrics(client: AppClient) -> Any:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return parse_metrics(r.text)


def batcher(client: AppClient) -> Batcher:
    found: Batcher = client.app.state.runtime.service.batcher
    return found


async def queued(client: AppClient, task: str, level: int, depth: int) -> None:
    b = batcher(client)
    await wait_until(lambda: b.depth((task, level)) == depth, 10, f"{task}/{level} depth")
