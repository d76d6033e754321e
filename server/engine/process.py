"""The engine process: one per device. It loads the checkpoint, warms up, and answers the
front ends over a ZMQ ROUTER socket (``server.engine.wire``) until SIGTERM, when it drains
(every accepted request is answered) and exits 0.

The engine, not the supervisor, touches torch: it picks the device, the number of front
ends when ``--frontends`` is not given (``default_frontends``) and its own threads, verifies
the checkpoint, and tells the supervisor on ``--report-fd`` (one JSON line: the device,
the front ends and the checkpoint, or the error that stops the server).

Run by ``dvn serve`` (``server.launcher``)::

    python -m server.engine.process --address ipc:///tmp/dvn-x/engine.sock --settings '{...}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from model_store.manifest import CheckpointError
from server.engine import wire
from server.engine.inproc import call_engine_async
from server.engine.outcome import ClientDisconnected
from server.engine.runtime import (
    Runtime,
    default_frontends,
    default_torch_threads,
    pick_device,
)
from server.errors import InvalidInput, NotReady, ServeError
from server.logs import SERVER, configure_logging
from server.priority import renice
from server.settings import Settings


class EngineServer:
    """The engine's side of the IPC: every message from a front end is decoded, checked and
    answered; a malformed one is refused and logged, and nothing else changes."""

    def __init__(self, runtime: Runtime, address: str) -> None:
        self.runtime = runtime
        self.address = address
        self.malformed = 0
        self._handling: set[asyncio.Task[None]] = set()
        self._ctx = zmq.asyncio.Context()
        self.socket = self._ctx.socket(zmq.ROUTER)
        # Unroutable replies (a front end that died) raise instead of vanishing unseen.
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.LINGER, 1000)  # the last answers leave before it closes
        self.socket.setsockopt(zmq.SNDHWM, 0)  # replies are bounded by the front ends' bound
        self.socket.setsockopt(zmq.RCVHWM, 0)

    def bind(self) -> None:
        self.socket.bind(self.address)

    async def serve(self) -> None:
        while True:
            frames = await self.socket.recv_multipart(copy=False)
            self.dispatch(frames)

    def dispatch(self, frames: list[zmq.Frame]) -> None:
        """Handle one message: ``[identity, header, (array)]``."""
        identity = frames[0].bytes
        try:
            if len(frames) < 2:
                raise wire.MalformedFrame("a message without a header frame")
            message = wire.decode_request(frames[1].buffer)
        except wire.MalformedFrame as e:
            self._malformed(identity, str(e))
            return
        if isinstance(message, wire.Infer):
            try:
                if len(frames) != 3:
                    raise wire.MalformedFrame(f"an infer message of {len(frames)} frames, not 3")
                inputs = wire.array_from(frames[2].buffer, message.shape, message.dtype)
            except wire.MalformedFrame as e:
                self._malformed(identity, str(e))
                self._spawn(self._reply(identity, [wire.failed(message.id, InvalidInput(str(e)))]))
                return
            self._spawn(self._infer(identity, message, inputs))
        elif isinstance(message, wire.Cancel):
            if self.runtime.service is not None:
                self.runtime.service.cancel((identity, message.id))
        elif isinstance(message, wire.Call):
            self._spawn(self._call(identity, message))
        elif isinstance(message, wire.Refused) and self.runtime.service is not None:
            for task, outcome, missed, shed, n in message.counts:
                self.runtime.service.count_refused(task, outcome, missed, n, shed)

    def _malformed(self, identity: bytes, why: str) -> None:
        self.malformed += 1
        SERVER.warning(
            "malformed IPC frame refused",
            extra={"fields": {"from": identity.hex(), "error": why}},
        )

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _infer(self, identity: bytes, message: wire.Infer, inputs: np.ndarray) -> None:
        received = time.perf_counter()
        service = self.runtime.service
        try:
            if service is None or not self.runtime.ready:
                raise NotReady(
                    "the server is warming up (profiling every level); retry shortly",
                    retry_after_s=1,
                )
            answer = await service.infer(message, inputs, key=(identity, message.id))
        except ServeError as e:
            await self._reply(identity, [wire.failed(message.id, e)])
            return
        except ClientDisconnected:
            return  # the front end answered its client already
        except Exception as e:  # a bug of ours: the front end answers 500, the engine goes on
            SERVER.exception("engine failed a request")
            error = ServeError(f"internal error in the engine ({type(e).__name__})")
            await self._reply(identity, [wire.failed(message.id, error)])
            return
        header, probs = wire.answered(message.id, answer, time.perf_counter() - received)
        await self._reply(identity, [wire.encode(header), probs.data])

    async def _call(self, identity: bytes, message: wire.Call) -> None:
        try:
            value = await call_engine_async(self.runtime, message.method, message.args)
            reply: wire.Reply = wire.Result(message.id, value)
        except ServeError as e:
            reply = wire.failed(message.id, e)
        except Exception as e:
            SERVER.exception("engine call failed", extra={"fields": {"method": message.method}})
            reply = wire.failed(message.id, ServeError(f"internal error ({type(e).__name__})"))
        await self._reply(identity, [reply])

    async def _reply(self, identity: bytes, parts: list[Any]) -> None:
        frames = [identity, *(wire.encode(p) if isinstance(p, wire.Reply) else p for p in parts)]
        try:
            await self.socket.send_multipart(frames, copy=False)
        except zmq.ZMQError as e:  # EHOSTUNREACH: that front end is gone
            SERVER.info(
                "reply to a front end that is gone dropped",
                extra={"fields": {"to": identity.hex(), "error": str(e)}},
            )

    def close(self) -> None:
        self.socket.close(linger=1000)
        self._ctx.term()


def report(fd: int | None, **fields: Any) -> None:
    """One JSON line to the supervisor (``--report-fd``), then the pipe is closed."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(fields).encode() + b"\n")
        os.close(fd)


async def run(
    settings: Settings, address: str, frontends: int = 1, report_fd: int | None = None
) -> int:
    """Serve until SIGTERM/SIGINT, then drain and return 0."""
    runtime = Runtime(settings=settings)
    server = EngineServer(runtime, address)
    server.bind()  # before loading: front ends connect at once, and see "loading"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve(), name="dvn-engine-ipc")
    try:
        await runtime.start()
    except Exception as e:
        if isinstance(e, CheckpointError) and report_fd is not None:
            report(report_fd, error=str(e))  # the supervisor prints it: no traceback
        else:
            SERVER.exception("engine failed to start")
            report(report_fd, error=f"the engine failed to start: {type(e).__name__}: {e}")
        serving.cancel()
        server.close()
        return 1
    assert runtime.checkpoint is not None and runtime.service is not None
    manifest = runtime.checkpoint.manifest
    report(
        report_fd,
        device=runtime.service.device,
        frontends=frontends,
        name=manifest.name,
        sha256=manifest.weights_sha256,
    )
    await stop.wait()
    SERVER.info("engine draining")
    await runtime.stop()  # every accepted request answered (or 503 past the drain timeout)
    await asyncio.sleep(0.05)  # let the last replies leave
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    server.close()
    SERVER.info("engine stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.engine.process")
    parser.add_argument("--address", required=True, help="ZMQ address to bind, e.g. ipc://...")
    parser.add_argument("--settings", required=True, help="the server's Settings as JSON")
    parser.add_argument(
        "--frontends", type=int, help="front ends beside this engine (default: by device)"
    )
    parser.add_argument("--report-fd", type=int, help="where to tell the supervisor it loaded")
    args = parser.parse_args(argv)
    settings = Settings.model_validate_json(args.settings)
    configure_logging(settings.log_level, settings.log_json)
    renice(settings.engine_nice, variable="DVN_ENGINE_NICE")  # before the executor's threads
    device = pick_device(settings.device)
    frontends = default_frontends(device) if args.frontends is None else args.frontends
    if settings.torch_threads is None:
        threads = default_torch_threads(device, frontends)
        settings = settings.model_copy(update={"torch_threads": threads})
    return asyncio.run(run(settings, args.address, frontends, args.report_fd))


if __name__ == "__main__":
    sys.exit(main())
