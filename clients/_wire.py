"""A light HTTP/1.1 transport for ``httpx.AsyncClient`` on asyncio streams, its responses
parsed by httptools (llhttp, the parser of Node.js and uvicorn): what the load generator
sends through, so that it, not the server, is not the bottleneck.

    async with httpx.AsyncClient(base_url=url, transport=WireTransport(max_connections=64)):
        ...

httpx's default transport (httpcore) asks sniffio which async library runs on every call
and scans every pooled connection for expiry on every request, which costs milliseconds of
CPU a request under many concurrent clients. h11 frames both directions but costs more CPU
per request than this (docs/decisions.md has the figures). This transport keeps, per origin, a
LIFO of idle keep-alive connections and a semaphore bounding connections at
``max_connections``; it writes each request in one ``write`` (request line, headers,
body), and llhttp reads the response: status line, headers, Content-Length and chunked
bodies, interim 1xx responses, and whether the connection stays open.

Scope: plain ``http://`` only, HTTP/1.1, request bodies buffered and sent with a
Content-Length, response bodies read whole before the response is returned (no streaming;
``client.stream()`` works but yields an already read body). An ``https://`` URL raises
:class:`httpx.UnsupportedProtocol`.

Failures map to httpx's exceptions, so callers catch what they already catch:

- ``httpx.PoolTimeout``: no connection free within the ``pool`` timeout;
- ``httpx.ConnectTimeout`` / ``httpx.ConnectError``: the TCP connect timed out / failed;
- ``httpx.WriteTimeout`` / ``httpx.WriteError``: sending the request;
- ``httpx.ReadTimeout``: no response byte within the ``read`` timeout (per read);
- ``httpx.ReadError``: the socket failed while reading (reset);
- ``httpx.RemoteProtocolError``: the server closed before or during the response, or sent
  something llhttp refuses (the message carries llhttp's reason).

A request on a *reused* idle connection that finds it closed before any response byte
arrives (the server dropped the keep-alive connection meanwhile) is retried once on a new
connection; nothing else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import httptools
import httpx

__all__ = ["WireTransport"]

MAX_HEAD_BYTES = 64 * 1024  # status line + headers; more is a protocol error
READ_SIZE = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_Timeouts = tuple[float | None, float | None, float | None, float | None]


class _ClosedBeforeResponse(Exception):
    """A connection ended before any byte of the response: safe to retry when reused."""


class _Response:
    """What llhttp's callbacks report of one response (interim 1xx ones are skipped)."""

    __slots__ = ("body", "complete", "headers", "keep_alive", "parser", "reason", "status")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.reason = b""
        self.status = 0  # set once the head is complete
        self.keep_alive = False
        self.complete = False

    def on_message_begin(self) -> None:
        self.headers, self.body, self.status = [], [], 0

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Asked here: once the message is complete llhttp has reset for the next one.
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = self.status >= 200

    def ends_at_close(self) -> bool:
        """Whether the body is delimited by the connection's end: a head is complete and it
        has neither a Content-Length nor chunked framing (llhttp waits for more data)."""
        if not self.status:
            return False
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def version(self) -> bytes:
        return b"HTTP/" + self.parser.get_http_version().encode("ascii")


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


@dataclass(eq=False)
class _Pool:
    """The connections to one origin: at most ``limit`` open, idle ones reused newest first."""

    host: str
    port: int
    limit: int
    idle: list[_Connection] = field(default_factory=list)
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.limit)

    @property
    def origin(self) -> str:
        return f"{self.host}:{self.port}"


def _timeouts(request: httpx.Request) -> _Timeouts:
    t: dict[str, Any] = request.extensions.get("timeout", {})
    return t.get("connect"), t.get("read"), t.get("write"), t.get("pool")


async def _request_body(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return await request.aread()


def _encode_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers. The body is buffered: always a Content-Length (none
    for a bodiless GET), never Transfer-Encoding; Host from the URL if the caller set none."""
    url = request.url
    lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    has_host = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower in (b"transfer-encoding", b"content-length"):
            continue
        has_host = has_host or lower == b"host"
        lines += [name, b": ", value, b"\r\n"]
    if not has_host:
        lines += [b"Host: ", url.netloc, b"\r\n"]
    if body or request.method in _BODY_METHODS:
        lines += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


class _Exchange:
    """One request and its response on one connection, under per-read and write deadlines."""

    def __init__(
        self, conn: _Connection, request: httpx.Request, origin: str, timeouts: _Timeouts
    ) -> None:
        self.conn = conn
        self.request = request
        self.origin = origin
        _, self.read_s, self.write_s, _ = timeouts
        self.received = 0  # bytes of the response seen

    async def send(self, data: bytes) -> None:
        writer = self.conn.writer
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.write_s):
                    await writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout(
                "timed out sending the request", request=self.request
            ) from None
        except OSError as e:
            if self.conn.reused:
                raise _ClosedBeforeResponse from e
            raise httpx.WriteError(str(e) or type(e).__name__, request=self.request) from e

    async def _read(self) -> bytes:
        try:
            if self.read_s is None:
                data = await self.conn.reader.read(READ_SIZE)
            else:
                async with asyncio.timeout(self.read_s):
                    data = await self.conn.reader.read(READ_SIZE)
        except TimeoutError:
            raise httpx.ReadTimeout(
                "timed out reading the response", request=self.request
            ) from None
        except OSError as e:
            if not self.received:
                raise _ClosedBeforeResponse from e
            raise httpx.ReadError(str(e) or type(e).__name__, request=self.request) from e
        if not data and not self.received:
            raise _ClosedBeforeResponse
        self.received += len(data)
        return data

    def _protocol_error(self, reason: str) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(
            f"bad response from {self.origin}: {reason}", request=self.request
        )

    async def response(self) -> tuple[httpx.Response, bool]:
        """The final response, its body read whole, and whether the connection may carry
        another request."""
        r = _Response()
        head_only = self.request.method == "HEAD"  # llhttp would wait for its body
        while not (r.complete or (head_only and r.status >= 200)):
            data = await self._read()
            if not data:
                if r.ends_at_close():
                    r.keep_alive = False
                    break
                raise self._protocol_error("server disconnected in the middle of a response")
            try:
                r.parser.feed_data(data)
            except httptools.HttpParserError as e:
                raise self._protocol_error(str(e)) from e
            if not r.status and self.received > MAX_HEAD_BYTES:
                raise self._protocol_error(f"response head over {MAX_HEAD_BYTES} bytes")
        body = r.body[0] if len(r.body) == 1 else b"".join(r.body)
        response = httpx.Response(
            r.status,
            headers=r.headers,
            stream=httpx.ByteStream(body),
            extensions={"http_version": r.version(), "reason_phrase": r.reason},
            request=self.request,
        )
        return response, r.keep_alive


class WireTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams, at most ``max_connections`` per origin.

    Raises:
        ValueError: ``max_connections`` below 1.
    """

    def __init__(self, max_connections: int = 100) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.max_connections = max_connections
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._open: set[_Connection] = set()
        self._closed = False
        # The encoded head of each request object while it lives: the load generator
        # sends each request it builds many times.
        self._heads: weakref.WeakKeyDictionary[httpx.Request, bytes] = weakref.WeakKeyDictionary()

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or in use, over every origin."""
        return len(self._open)

    def _pool(self, request: httpx.Request) -> _Pool:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"WireTransport speaks plain http:// only, not {url.scheme}:// ({url}); "
                "use httpx's own transport for it (dvn loadtest --http-client httpx, "
                "LoadTestConfig(http_client='httpx'))",
                request=request,
            )
        if self._closed:
            raise RuntimeError("WireTransport is closed; make a new one")
        port = url.port or 80
        pool = self._pools.get((url.host, port))
        if pool is None:
            pool = self._pools[(url.host, port)] = _Pool(url.host, port, self.max_connections)
        return pool

    async def _connect(
        self, pool: _Pool, request: httpx.Request, connect_s: float | None
    ) -> _Connection:
        try:
            async with asyncio.timeout(connect_s):
                reader, writer = await asyncio.open_connection(
                    pool.host, pool.port, limit=READ_SIZE
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {pool.origin} within {connect_s} s", request=request
            ) from None
        except OSError as e:
            raise httpx.ConnectError(
                f"cannot connect to {pool.origin}: {e}", request=request
            ) from e
        conn = _Connection(reader, writer)
        self._open.add(conn)
        return conn

    def _idle(self, pool: _Pool) -> _Connection | None:
        """The newest idle connection still open, closing any found closed."""
        while pool.idle:
            conn = pool.idle.pop()
            if conn.usable():
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: _Connection) -> None:
        self._open.discard(conn)
        conn.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool(request)
        timeouts = _timeouts(request)
        connect_s, _, _, pool_s = timeouts
        body = await _request_body(request)
        head = self._heads.get(request)
        if head is None:
            head = self._heads[request] = _encode_head(request, body)
        data = head + body
        try:
            if pool.slots.locked():
                async with asyncio.timeout(pool_s):
                    await pool.slots.acquire()
            else:
                await pool.slots.acquire()  # free: returns at once
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"no free connection to {pool.origin} within {pool_s} s "
                f"({self.max_connections} in use)",
                request=request,
            ) from None
        try:
            conn = self._idle(pool) or await self._connect(pool, request, connect_s)
            for attempt in (1, 2):
                exchange = _Exchange(conn, request, pool.origin, timeouts)
                try:
                    await exchange.send(data)
                    response, keep = await exchange.response()
                    break
                except _ClosedBeforeResponse as e:
                    self._discard(conn)
                    if attempt == 2 or not conn.reused:
                        raise httpx.RemoteProtocolError(
                            f"{pool.origin}: server disconnected without sending a response",
                            request=request,
                        ) from e.__cause__
                    conn = await self._connect(pool, request, connect_s)
                except BaseException:
                    self._discard(conn)  # in an unknown state: half read, or cancelled
                    raise
            if keep and not self._closed:
                conn.reused = True
                pool.idle.append(conn)
            else:
                self._discard(conn)
            return response
        finally:
            pool.slots.release()

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later requests raise RuntimeError."""
        self._closed = True
        for pool in self._pools.values():
            pool.idle.clear()
        conns, self._open = list(self._open), set()
        for conn in conns:
            conn.writer.transport.abort()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
