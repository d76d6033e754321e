"""The light transport against raw asyncio servers, for what uvicorn never produces:
connections closed under a request, broken responses, interim responses, a HEAD answer
with a Content-Length."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from clients._wire import WireTransport
from tests.clients.wire.helpers import client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def raw_server(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A TCP server calling ``handler(reader, writer, n)`` for its n-th connection (0-based);
    the list counts connections."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        try:
            await handler(reader, writer, accepted[-1])
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"http://127.0.0.1:{port}", accepted


async def test_reused_connection_closed_by_the_server_is_retried_once() -> None:
    async def answer_once(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)  # keep-alive promised ...
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # ... but the next request gets a close

    srv, url, accepted = await raw_server(answer_once)
    async with srv, client(url, WireTransport()) as http:
        assert (await http.get("/")).text == "ok"
        assert (await http.get("/")).text == "ok"  # retried on a new connection
    assert len(accepted) == 2


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")

    srv, url, accepted = await raw_server(hang_up)
    async with srv, client(url, WireTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.post("/", content=b"x")
    assert len(accepted) == 1


MIDWAY = "server disconnected in the middle of a response"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", MIDWAY),
        (b"HTTP/1.1 200 OK\r\nContent-Le", MIDWAY),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "Expected HTTP/, RTSP/ or ICE/"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "Invalid header token"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            "Invalid character in Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "Invalid character in chunk size",
        ),
    ],
)
async def test_broken_responses_are_protocol_errors_with_the_reason(
    reply: bytes, reason: str
) -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()

    srv, url, _ = await raw_server(send)
    async with srv, client(url, WireTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await http.get("/")
    origin = url.removeprefix("http://")
    assert str(caught.value) == f"bad response from {origin}: {reason}"


async def test_close_delimited_body_and_interim_response() -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nall of it")
        await writer.drain()

    srv, url, _ = await raw_server(send)
    transport = WireTransport()
    async with srv, client(url, transport) as http:
        r = await http.get("/")
        assert (r.status_code, r.http_version, r.text, r.headers["x-a"]) == (
            200,
            "HTTP/1.0",
            "all of it",
            "1",
        )
        assert transport.open_connections == 0  # a close-delimited body ends the connection


async def test_a_response_head_without_end_is_cut_at_the_limit() -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: a\r\n" * 8_000)  # and no end
        await writer.drain()
        await reader.read()  # until the client gives up

    srv, url, _ = await raw_server(send)
    async with srv, client(url, WireTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await http.get("/")
    origin = url.removeprefix("http://")
    assert str(caught.value) == f"bad response from {origin}: response head over 65536 bytes"


async def test_head_response_with_a_length_has_no_body_and_keeps_the_connection() -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HEAD / HTTP/1.1\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        await reader.read()  # until the client closes

    srv, url, accepted = await raw_server(send)
    async with srv, client(url, WireTransport()) as http:
        head = await http.head("/")
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "5", b"")
        assert (await http.get("/")).text == "ok"
    assert len(accepted) == 1
