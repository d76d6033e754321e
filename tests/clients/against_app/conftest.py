"""The clients against the real in-process app (``httpx.ASGITransport``, lifespan
entered): the reference checkpoint and a served app with a client of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model_store.checkpoint import Checkpoint, load
from tests.clients.against_app.helpers import Served, connect
from tests.conftest import ServeFactory


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path) -> Checkpoint:
    """The checkpoint the test servers load, run directly."""
    return load(tiny_checkpoint, "cpu")


@pytest.fixture
async def served(serve: ServeFactory) -> AsyncIterator[Served]:
    s = await connect(serve)
    async with s.dvn:
        yield s
