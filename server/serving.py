"""A uvicorn server whose first SIGTERM/SIGINT drains before exiting (a second one exits
at once). Exits 0 after a drain: the signal is not re-raised. A drain that runs past
``drain_timeout_s`` answers every request still queued with 503 ``not_ready`` and exits
within ``FINAL_GRACE_S`` more (uvicorn's own graceful shutdown is bounded the same way)."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn

from server.errors import NotReady
from server.logs import SERVER
from server.runtime import Runtime

# After a drain timeout: how long the refused requests' answers and the running batch get.
FINAL_GRACE_S = 2.0


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
        runtime = self.runtime
        runtime.ready = False
        service = runtime.service
        if service is not None:
            service.draining = True
            timeout = runtime.settings.drain_timeout_s
            if not await service.wait_idle(timeout):
                # Out of time: answer what is still queued (503, retry elsewhere) rather
                # than drop its connection; the batch running now finishes if it can.
                failed = service.batcher.fail_queued(
                    NotReady(
                        f"the server shut down before this request was computed (drain "
                        f"timeout DVN_DRAIN_TIMEOUT_S={timeout:g} s); retry on another replica",
                        retry_after_s=1,
                    )
                )
                SERVER.warning(
                    "drain timed out",
                    extra={"fields": {"inflight": service.inflight, "refused": failed}},
                )
                await service.wait_idle(FINAL_GRACE_S)
        SERVER.info("drained: exiting")
        self.should_exit = True
