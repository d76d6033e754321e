"""A DVNClient whose transport is an httpx.MockTransport fake."""

from __future__ import annotations

from typing import Any

from clients.client import DVNClient
from tests.clients.fakes import (
    URL,
    Recorder,
)


def client_for(handler: Recorder, **kwargs: Any) -> DVNClient:
    return DVNClient(URL, transport=handler.transport, **kwargs)
