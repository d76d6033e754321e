"""A uvicorn server whose first SIGTERM/SIGINT drains before exiting (a second one exits
at once). Exits 0 after a drain: the signal is not re-raised. A drain that runs past
``drain_timeout_s`` answers every request still queued with 503 ``not_ready`` and exits
within ``FINAL_GRACE_S`` more (:meth:`Runtime.drain`; uvicorn's own graceful shutdown is
bounded the same way)."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn

from server.engine.runtime import Runtime
from server.logs import SERVER


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
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
        await self.runtime.drain()
        SERVER.info("drained: exiting")
        self.should_exit = True
