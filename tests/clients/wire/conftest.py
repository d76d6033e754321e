"""A real uvicorn server on loopback for the light HTTP/1.1 transport (clients/_wire.py):
echo, chunked, closing, slow, peer-address and empty routes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


async def echo(request: Request) -> Response:
    body = await request.body()
    headers = {
        "X-Method": request.method,
        "X-Query": request.url.query,
        "X-Host": request.headers.get("host", ""),
        "X-Content-Length": request.headers.get("content-length", "-"),
    }
    return Response(body, headers=headers, media_type=request.headers.get("content-type"))


async def chunked(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part {i};".encode()
            await asyncio.sleep(0.005)

    return StreamingResponse(parts(), media_type="text/plain")


async def close(request: Request) -> Response:
    return PlainTextResponse("bye", headers={"Connection": "close"})


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "1")))
    return PlainTextResponse("late")


async def peer(request: Request) -> Response:
    """The client's port: one per TCP connection."""
    await asyncio.sleep(float(request.query_params.get("s", "0")))
    assert request.client is not None
    return JSONResponse({"port": request.client.port})


async def empty(request: Request) -> Response:
    return Response(status_code=204)


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST", "PUT"]),
        Route("/chunked", chunked),
        Route("/close", close),
        Route("/slow", slow),
        Route("/peer", peer),
        Route("/empty", empty, methods=["GET", "HEAD"]),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A uvicorn server on a free loopback port, in a thread of its own."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(APP, log_level="warning", lifespan="off", timeout_keep_alive=30)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()
