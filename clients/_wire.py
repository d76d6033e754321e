"""A light HTTP/1.1 transport for ``httpx.AsyncClient`` on raw asyncio streams: what the
load generator uses so that it, not the server, is not the bottleneck.

    async with httpx.AsyncClient(base_url=url, transport=WireTransport(max_connections=64)):
        ...

httpx's default transport (httpcore) costs milliseconds of CPU a request under many
concurrent clients: it asks sniffio which async library runs on every call and scans every
pooled connection for expiry on every request. This one keeps, per origin, a LIFO of idle
keep-alive connections and a semaphore bounding connections at ``max_connections``; a
request is written in one ``write`` (request line, headers, body), the response head read
with one ``readuntil``, the body by Content-Length, chunks, or until the server closes.

Scope: plain ``http://`` only, HTTP/1.1, request bodies buffered, response bodies read
whole before the response is returned (no streaming; ``client.stream()`` works but yields
an already read body). An ``https://`` URL raises :class:`httpx.UnsupportedProtocol`.

Failures map to httpx's exceptions, so callers catch what they already catch:

- ``httpx.PoolTimeout``: no connection free within the ``pool`` timeout;
- ``httpx.ConnectTimeout`` / ``httpx.ConnectError``: the TCP connect timed out / failed;
- ``httpx.WriteTimeout`` / ``httpx.WriteError``: sending the request;
- ``httpx.ReadTimeout``: no response byte within the ``read`` timeout (per read);
- ``httpx.ReadError``: the socket failed while reading (reset);
- ``httpx.RemoteProtocolError``: the server closed before or during the response, or sent
  something that is not HTTP/1.x.

A request on a *reused* idle connection that finds it closed before any response byte
arrives (the server dropped the keep-alive connection meanwhile) is retried once on a new
connection; nothing else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["WireTransport"]

MAX_HEAD_BYTES = 64 * 1024  # status line + headers; more is a protocol error
_NO_BODY_STATUSES = frozenset({204, 304})
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_Timeouts = tuple[float | None, float | None, float | None, float | None]


class _ClosedBeforeResponse(Exception):
    """A connection ended before any byte of the response: safe to retry when reused."""


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


def _timeouts(request: httpx.Request) -> _Timeouts:
    t: dict[str, Any] = request.extensions.get("timeout", {})
    return t.get("connect"), t.get("read"), t.get("write"), t.get("pool")


def _encode_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers, with Host and (for a body) Content-Length."""
    url = request.url
    lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    has_host = has_length = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"transfer-encoding":
            continue  # the body is buffered: always sent with a Content-Length
        if lower == b"host":
            has_host = True
        elif lower == b"content-length":
            has_length = True
            value = str(len(body)).encode("ascii")
        lines += [name, b": ", value, b"\r\n"]
    if not has_host:
        lines += [b"Host: ", url.netloc, b"\r\n"]
    if not has_length and (body or request.method.encode("ascii") in _BODY_METHODS):
        lines += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


async def _request_body(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return await request.aread()


def _parse_head(head: bytes, request: httpx.Request) -> tuple[bytes, int, bytes, list[Any]]:
    """(HTTP version, status, reason, raw headers) of a response head ending in CRLFCRLF."""
    lines = head[:-4].split(b"\r\n")
    try:
        version, status_text, *reason = lines[0].split(b" ", 2)
        status = int(status_text)
    except ValueError:
        status = -1
    if status < 100 or status > 999 or not version.startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(
            f"not an HTTP/1.x status line: {lines[0][:80]!r}", request=request
        )
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}", request=request)
        headers.append((name, value.strip()))
    return version, status, reason[0] if reason else b"", headers


class _Reader:
    """Reads one response from a connection under a per-read deadline."""

    def __init__(self, conn: _Connection, request: httpx.Request, read_s: float | None) -> None:
        self.stream = conn.reader
        self.request = request
        self.read_s = read_s
        self.started = False  # any byte of the response seen

    async def _io(self, what: Any) -> bytes:
        try:
            if self.read_s is None:
                data: bytes = await what
            else:
                async with asyncio.timeout(self.read_s):
                    data = await what
        except TimeoutError:
            raise httpx.ReadTimeout(
                "timed out reading the response", request=self.request
            ) from None
        except asyncio.IncompleteReadError as e:
            if not self.started and not e.partial:
                raise _ClosedBeforeResponse from None
            raise httpx.RemoteProtocolError(
                "server disconnected in the middle of a response", request=self.request
            ) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError(
                f"response head or chunk line over {MAX_HEAD_BYTES} bytes", request=self.request
            ) from None
        except OSError as e:
            if not self.started:
                raise _ClosedBeforeResponse from e
            raise httpx.ReadError(str(e) or type(e).__name__, request=self.request) from e
        self.started = True
        return data

    async def head(self) -> bytes:
        return await self._io(self.stream.readuntil(b"\r\n\r\n"))

    async def exactly(self, n: int) -> bytes:
        return await self._io(self.stream.readexactly(n))

    async def chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self._io(self.stream.readuntil(b"\r\n"))
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"bad chunk size line {line[:40]!r}", request=self.request
                ) from None
            if size == 0:
                while await self._io(self.stream.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers: read and drop
                return b"".join(parts)
            chunk = await self.exactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF", request=self.request)
            parts.append(chunk[:-2])

    async def until_close(self) -> bytes:
        return await self._io(self.stream.read())


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
                    pool.host, pool.port, limit=MAX_HEAD_BYTES
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {pool.host}:{pool.port} within {connect_s} s", request=request
            ) from None
        except OSError as e:
            raise httpx.ConnectError(
                f"cannot connect to {pool.host}:{pool.port}: {e}", request=request
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
        connect_s, read_s, write_s, pool_s = _timeouts(request)
        body = await _request_body(request)
        data = _encode_head(request, body) + body
        try:
            if pool.slots.locked():
                async with asyncio.timeout(pool_s):
                    await pool.slots.acquire()
            else:
                await pool.slots.acquire()  # free: returns at once
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"no free connection to {pool.host}:{pool.port} within {pool_s} s "
                f"({self.max_connections} in use)",
                request=request,
            ) from None
        try:
            conn = self._idle(pool) or await self._connect(pool, request, connect_s)
            for attempt in (1, 2):
                try:
                    response, keep = await self._exchange(conn, request, data, read_s, write_s)
                    break
                except _ClosedBeforeResponse as e:
                    self._discard(conn)
                    if attempt == 2 or not conn.reused:
                        raise httpx.RemoteProtocolError(
                            "server disconnected without sending a response", request=request
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

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        data: bytes,
        read_s: float | None,
        write_s: float | None,
    ) -> tuple[httpx.Response, bool]:
        """Send ``data`` on ``conn`` and read the response; returns it and whether the
        connection may carry another request."""
        writer = conn.writer
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(write_s):
                    await writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request", request=request) from None
        except OSError as e:
            if conn.reused:
                raise _ClosedBeforeResponse from e
            raise httpx.WriteError(str(e) or type(e).__name__, request=request) from e
        reader = _Reader(conn, request, read_s)
        while True:
            version, status, reason, headers = _parse_head(await reader.head(), request)
            if status >= 200 or status == 101:
                break  # 1xx interim responses (100 Continue) carry no body: skip them
        keep = (
            version == b"HTTP/1.1"
            and b"close" not in request.headers.get("connection", "").encode("latin-1").lower()
        )
        length: int | None = None
        chunked = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0:
                    raise httpx.RemoteProtocolError(
                        f"bad Content-Length {value[:40]!r}", request=request
                    )
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lower == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep = False
                elif b"keep-alive" in tokens:
                    keep = True
        if status < 200:
            content, keep = b"", False  # 101: the connection is no longer HTTP/1.1
        elif request.method == "HEAD" or status in _NO_BODY_STATUSES:
            content = b""
        elif chunked:
            content = await reader.chunked()
        elif length is not None:
            content = await reader.exactly(length) if length else b""
        else:
            content = await reader.until_close()
            keep = False
        response = httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": version, "reason_phrase": reason},
            request=request,
        )
        return response, keep

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
