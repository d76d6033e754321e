"""What the light transport's tests share."""

from __future__ import annotations

from typing import Any

import httpx

from clients._wire import WireTransport


def client(url: str, transport: WireTransport, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=transport, **kwargs)
