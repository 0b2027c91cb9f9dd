"""A lean HTTP/1.1 keep-alive transport for ``httpx.AsyncClient``, built for streaming.

Why not httpx's default transport: it stacks httpcore's pool, h11 and anyio between
the socket and the caller, and for server-sent events (one small HTTP chunk per token)
that per-chunk Python work made the benchmark client use more CPU than vLLM's own
aiohttp client, so the client risked becoming what it measures. This transport parses
the response head and the chunked body inside an ``asyncio.Protocol`` (a few
``bytes.find`` per chunk) and hands whole decoded runs of body bytes to the reader.

Scope, on purpose: HTTP/1.1 over TCP or TLS to the endpoint itself (no proxies, no
HTTP/2, no request body streaming, no response decompression: the client asks for
``identity``). Failures map to httpx's exceptions (``ConnectError``, ``ConnectTimeout``,
``RemoteProtocolError``, ``ReadError``) so callers handle both transports alike.
A connection is reused only after its response body was read to the end.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

_MAX_HEAD = 64 * 1024
_Origin = tuple[str, str, int]


class StreamingTransport(httpx.AsyncBaseTransport):
    """At most ``max_connections`` HTTP/1.1 connections, kept alive between requests."""

    def __init__(self, *, max_connections: int, connect_timeout: float = 30.0) -> None:
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on an idle or new connection; the body streams from it."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        slots = self._slots
        await slots.acquire()
        origin = (request.url.scheme, request.url.host, request.url.port or _port(request))
        try:
            connection = await self._exchange(origin, request)
        except BaseException:
            slots.release()
            raise
        status, headers = connection.response_head()

        def release(reusable: bool) -> None:
            if reusable:
                self._idle.setdefault(origin, []).append(connection)
            else:
                connection.close()
            slots.release()

        return httpx.Response(
            status_code=status,
            headers=headers,
            stream=_Body(connection, request, release),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _exchange(self, origin: _Origin, request: httpx.Request) -> _Connection:
        body = await request.aread()
        data = _head(request, len(body)) + body
        idle = self._idle_connection(origin)
        if idle is not None:
            try:
                return await _send(idle, data, request)
            except httpx.RemoteProtocolError:
                # The server closed this kept-alive connection just as we reused it
                # (no byte of response came back): send once more on a fresh one.
                if idle.received_any():
                    raise
        return await _send(await self._connect(origin, request), data, request)

    async def aclose(self) -> None:
        """Close every idle connection."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            self._ssl = self._ssl or httpx.create_ssl_context()
            tls = self._ssl
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError as e:
            raise httpx.ConnectTimeout(
                f"connect to {host}:{port} timed out", request=request
            ) from e
        except OSError as e:
            raise httpx.ConnectError(f"{e.strerror or e} ({host}:{port})", request=request) from e
        return protocol


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes requests, parses one response at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[None] | None = None
        self._head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._chunks: list[bytes] = []
        self._mode = "head"  # head → chunked | length | close → done
        self._remaining = 0
        self._keep_alive = True
        self._lost: Exception | None = None
        self._closed = False

    # asyncio callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            if self._mode == "head":
                self._parse_head()
            if self._mode == "chunked":
                self._parse_chunks()
            elif self._mode == "length":
                self._take_length()
            elif self._mode == "close":
                self._chunks.append(self._buffer)
                self._buffer = b""
        except _ProtocolError as e:
            self._lost = e
            self.close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._mode == "close":
            self._mode = "done"
        elif self._mode != "done" and self._lost is None:
            self._lost = exc or ConnectionResetError("peer closed the connection")
        self._wake()

    # used by the transport -------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._closed or self._transport is None:
            raise httpx.RemoteProtocolError("connection closed before the request was sent")
        self._transport.write(data)

    async def head(self, request: httpx.Request) -> None:
        while self._head is None:
            self._raise_if_lost(request, "response headers")
            await self._wait()

    def response_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        return self._head

    def received_any(self) -> bool:
        return bool(self._buffer) or self._head is not None

    async def body(self, request: httpx.Request) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks.clear()
                yield data
                continue
            if self._mode == "done":
                return
            self._raise_if_lost(request, "complete message body")
            await self._wait()

    def finished(self) -> bool:
        return self._mode == "done"

    def reusable(self) -> bool:
        return not self._closed and self._keep_alive and self._lost is None

    def reset(self) -> None:
        self._head, self._mode, self._remaining = None, "head", 0

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    # parsing --------------------------------------------------------------------

    def _parse_head(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise _ProtocolError("response headers too large")
            return
        lines = self._buffer[:end].split(b"\r\n")
        self._buffer = self._buffer[end + 4 :]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _ProtocolError(f"malformed status line {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _ProtocolError(f"malformed header line {line[:80]!r}")
            headers.append((name.strip(), value.strip()))
        status = int(parts[1])
        self._head = (status, headers)
        self._choose_body_mode(parts[0], status, headers)

    def _choose_body_mode(
        self, version: bytes, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        fields = {name.lower(): value.lower() for name, value in headers}
        connection = fields.get(b"connection", b"")
        self._keep_alive = (
            b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
        )
        if status in (204, 304) or 100 <= status < 200:
            self._mode = "done"
        elif b"chunked" in fields.get(b"transfer-encoding", b""):
            self._mode = "chunked"
        elif b"content-length" in fields:
            self._remaining = int(fields[b"content-length"])
            self._mode = "length" if self._remaining else "done"
        else:
            self._mode, self._keep_alive = "close", False

    def _parse_chunks(self) -> None:
        buffer, start = self._buffer, 0
        while True:
            line_end = buffer.find(b"\r\n", start)
            if line_end < 0:
                break
            size_text = buffer[start:line_end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _ProtocolError(f"malformed chunk size {size_text[:20]!r}") from None
            if size == 0:
                trailer_end = buffer.find(b"\r\n", line_end + 2)
                if trailer_end < 0:
                    break
                if trailer_end != line_end + 2:  # skip trailer fields up to the blank line
                    blank = buffer.find(b"\r\n\r\n", line_end)
                    if blank < 0:
                        break
                    trailer_end = blank + 2
                start = trailer_end + 2
                self._mode = "done"
                break
            data_start = line_end + 2
            data_end = data_start + size
            if len(buffer) < data_end + 2:
                break
            self._chunks.append(buffer[data_start:data_end])
            start = data_end + 2
        self._buffer = buffer[start:]

    def _take_length(self) -> None:
        take = self._buffer[: self._remaining]
        self._buffer = self._buffer[len(take) :]
        self._remaining -= len(take)
        if take:
            self._chunks.append(take)
        if self._remaining == 0:
            self._mode = "done"

    # waiting ----------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _raise_if_lost(self, request: httpx.Request, what: str) -> None:
        if isinstance(self._lost, _ProtocolError):
            raise httpx.RemoteProtocolError(str(self._lost), request=request)
        if self._lost is not None or self._closed:
            detail = f" ({self._lost})" if self._lost else ""
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending {what}{detail}", request=request
            )


class _Body(httpx.AsyncByteStream):
    """The response body; hands the connection back (or closes it) when done."""

    def __init__(self, connection: _Connection, request: httpx.Request, release: Any) -> None:
        self._connection = connection
        self._request = request
        self._release = release
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._connection.body(self._request):
            yield data

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        connection = self._connection
        reusable = connection.finished() and connection.reusable()
        if reusable:
            connection.reset()
        self._release(reusable)


class _ProtocolError(Exception):
    """The server's bytes are not valid HTTP/1.1."""


async def _send(connection: _Connection, data: bytes, request: httpx.Request) -> _Connection:
    try:
        connection.send(data)
        await connection.head(request)
    except BaseException:
        connection.close()
        raise
    return connection


def _port(request: httpx.Request) -> int:
    return 443 if request.url.scheme == "https" else 80


def _head(request: httpx.Request, length: int) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    skip = {b"content-length", b"transfer-encoding"}
    for name, value in request.headers.raw:
        if name.lower() not in skip:
            lines.append(name + b": " + value)
    if length or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"
