"""A uvicorn server whose first SIGTERM/SIGINT drains before exiting (a second one exits
at once). Exits 0 after a drain: the signal is not re-raised. A drain that runs past
``drain_timeout_s`` answers every request still queued with 503 ``not_ready`` and exits
within ``FINAL_GRACE_S`` more (:meth:`Runtime.drain`; uvicorn's own graceful shutdown is
bounded the same way)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

from server.logs import SERVER


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[object]]) -> None:
        super().__init__(config)
        self.drain = drain
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining:
            self.force_exit = True
            self.should_exit = True
            return
        self.draining = True
        SERVER.info("signal received: draining", extra={"fields": {"signal": sig}})
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        await self.drain()
        SERVER.info("drained: exiting")
        self.should_exit = True
