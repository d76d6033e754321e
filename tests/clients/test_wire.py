"""The light HTTP/1.1 transport (clients/_wire.py) against a real uvicorn server on
loopback, and against raw asyncio servers for the failures uvicorn never produces."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from clients._wire import WireTransport


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


def client(url: str, transport: WireTransport, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=transport, **kwargs)


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


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "middle of a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "middle of a response"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    ],
)
async def test_broken_responses_are_protocol_errors(reply: bytes, match: str) -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()

    srv, url, _ = await raw_server(send)
    async with srv, client(url, WireTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError, match=match):
            await http.get("/")


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


async def test_cancelled_request_drops_its_connection(server: str) -> None:
    transport = WireTransport(max_connections=1)
    async with client(server, transport) as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.get("/slow", params={"s": "1"})
        assert transport.open_connections == 0
        assert (await http.get("/echo")).status_code == 200  # the slot was given back


def test_loadtest_uses_the_light_transport_for_http_by_default() -> None:
    from clients.loadtest import LoadTestConfig

    open_loop = LoadTestConfig("http://127.0.0.1:8000", max_outstanding=40).make_transport()
    assert isinstance(open_loop, WireTransport) and open_loop.max_connections == 40
    closed = LoadTestConfig("http://h:1", mode="closed", concurrency=7).make_transport()
    assert isinstance(closed, WireTransport) and closed.max_connections == 7
    assert LoadTestConfig("http://h:1", http_client="httpx").make_transport() is None
    assert LoadTestConfig("https://h:1").make_transport() is None  # httpx speaks TLS
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert LoadTestConfig("http://h:1", transport=mock).make_transport() is mock
    with pytest.raises(ValueError, match="http_client must be wire or httpx, got 'h2'"):
        LoadTestConfig("http://h:1", http_client="h2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "expected"), [([], "wire"), (["--http-client", "httpx"], "httpx")]
)
def test_dvn_loadtest_http_client_option(
    argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    import clients.cli
    import clients.loadtest

    seen: list[Any] = []

    def fake_run(config: Any) -> Any:
        seen.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(clients.loadtest, "run_loadtest", fake_run)
    parser = argparse.ArgumentParser(prog="dvn")
    clients.cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadtest", "http://127.0.0.1:8000", "--quiet", *argv])
    with pytest.raises(ValueError, match="stop here"):
        args.handler(args)
    assert seen[0].http_client == expected


async def test_loadtest_through_the_light_transport_against_a_real_server(
    serve: Any,
) -> None:
    """The load generator's default path (the light transport, requests sent past the
    client) against the real app on uvicorn: every request answered and accounted for."""
    from clients.loadtest import LoadTestConfig, arun_loadtest

    http = await serve()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(http.app, log_level="warning", lifespan="off"))
    running = asyncio.create_task(srv.serve(sockets=[sock]))
    try:
        while not srv.started:
            await asyncio.sleep(0.01)
        config = LoadTestConfig(
            f"http://127.0.0.1:{port}",
            mode="closed",
            concurrency=4,
            duration=1.0,
            warmup=0.2,
            budget_mix="none:1,1MiB:1",
            seed=2,
        )
        assert isinstance(config.make_transport(), WireTransport)
        report = await arun_loadtest(config)
    finally:
        srv.should_exit = True
        await running
        sock.close()
    assert report.sent > 20 and report.ok == report.sent
    assert report.errors == report.timeouts == 0
    assert set(report.levels) == {"digits", "shapes"}
    assert report.budget_attainment["1MiB"].ok == report.budget_attainment["1MiB"].sent
