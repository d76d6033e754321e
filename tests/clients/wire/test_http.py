"""The light HTTP/1.1 transport against a real uvicorn server: bodies, headers, keep-alive
and the pool, timeouts, and refusals."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clients._wire import WireTransport
from tests.clients.wire.helpers import client


async def test_post_body_query_and_headers_round_trip(server: str) -> None:
    async with client(server, WireTransport()) as http:
        body = bytes(range(256)) * 40
        r = await http.post(
            "/echo", params={"a": "1 2", "b": "é"}, content=body, headers={"Content-Type": "x/y"}
        )
    assert r.status_code == 200 and r.reason_phrase == "OK" and r.http_version == "HTTP/1.1"
    assert r.content == body
    assert r.headers["content-type"] == "x/y"
    assert r.headers["x-content-length"] == str(len(body))
    assert r.headers["x-host"] == server.removeprefix("http://")
    assert r.headers["x-query"] == "a=1+2&b=%C3%A9"


async def test_post_without_body_sends_content_length_zero(server: str) -> None:
    async with client(server, WireTransport()) as http:
        r = await http.post("/echo")
        g = await http.get("/echo")
    assert (r.status_code, r.content, r.headers["x-content-length"]) == (200, b"", "0")
    assert g.headers["x-method"] == "GET" and g.headers["x-content-length"] == "-"


async def test_streaming_request_body_is_sent_whole(server: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async with client(server, WireTransport()) as http:
        r = await http.put("/echo", content=body())
    assert r.content == b"abcdef" and r.headers["x-content-length"] == "6"


async def test_chunked_response_body(server: str) -> None:
    async with client(server, WireTransport()) as http:
        r = await http.get("/chunked")
        again = await http.get("/echo", params={"after": "chunked"})
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.text == "".join(f"part {i};" for i in range(5))
    assert again.headers["x-query"] == "after=chunked"  # the connection was left clean


async def test_no_body_for_204_and_head(server: str) -> None:
    transport = WireTransport()
    async with client(server, transport) as http:
        assert (await http.get("/empty")).status_code == 204
        assert (await http.head("/empty")).content == b""
        assert (await http.get("/echo")).status_code == 200
        assert transport.open_connections == 1


async def test_connection_close_is_honoured(server: str) -> None:
    transport = WireTransport()
    async with client(server, transport) as http:
        ports = set()
        for _ in range(3):
            r = await http.get("/close")
            assert r.text == "bye" and r.headers["connection"] == "close"
            assert transport.open_connections == 0
            ports.add((await http.get("/peer")).json()["port"])
        # /peer after each close: a new connection each time, kept alive until the next
        assert len(ports) == 3


async def test_sequential_requests_reuse_one_connection(server: str) -> None:
    transport = WireTransport()
    async with client(server, transport) as http:
        ports = {(await http.get("/peer")).json()["port"] for _ in range(20)}
    assert len(ports) == 1


async def test_concurrent_requests_use_at_most_the_pools_connections(server: str) -> None:
    transport = WireTransport(max_connections=3)
    most = 0

    async def one() -> int:
        nonlocal most
        response = await http.get("/peer", params={"s": "0.01"})
        most = max(most, transport.open_connections)
        port: int = response.json()["port"]
        return port

    async with client(server, transport) as http:
        ports = set(await asyncio.gather(*(one() for _ in range(40))))
        assert transport.open_connections <= 3
    assert 1 <= len(ports) <= 3 and most <= 3
    assert transport.open_connections == 0  # aclose closed every connection


async def test_read_timeout(server: str) -> None:
    async with client(server, WireTransport(), timeout=httpx.Timeout(5, read=0.1)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/slow", params={"s": "2"})
        assert (await http.get("/echo")).status_code == 200  # a new connection works


async def test_pool_timeout_when_every_connection_is_busy(server: str) -> None:
    transport = WireTransport(max_connections=1)
    async with client(server, transport, timeout=httpx.Timeout(5, pool=0.1)) as http:
        busy = asyncio.create_task(http.get("/slow", params={"s": "0.5"}))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout, match="1 in use"):
            await http.get("/echo")
        assert (await busy).text == "late"


async def test_connect_error_when_nothing_listens() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound, never listened: the port is free and refuses
    async with client(f"http://127.0.0.1:{port}", WireTransport()) as http:
        with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}"):
            await http.get("/")


async def test_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(60)

    monkeypatch.setattr(asyncio, "open_connection", never)
    async with client("http://127.0.0.1:9", WireTransport(), timeout=0.1) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get("/")


async def test_https_is_refused_naming_the_alternative() -> None:
    async with client("https://127.0.0.1:9", WireTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol, match="--http-client httpx"):
            await http.get("/")


async def test_closed_transport_refuses_requests(server: str) -> None:
    transport = WireTransport()
    async with client(server, transport) as http:
        await http.get("/echo")
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", server + "/echo"))


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections must be >= 1, got 0"):
        WireTransport(max_connections=0)


async def test_cancelled_request_drops_its_connection(server: str) -> None:
    transport = WireTransport(max_connections=1)
    async with client(server, transport) as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.get("/slow", params={"s": "1"})
        assert transport.open_connections == 0
        assert (await http.get("/echo")).status_code == 200  # the slot was given back
