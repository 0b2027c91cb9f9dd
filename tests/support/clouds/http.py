"""The HTTP plumbing the local cloud API servers share: a threaded listener on 127.0.0.1
that hands each request, as a :class:`Request`, to one ``handle`` callable and writes
the :class:`Answer` it returns.

Each server (``digitalocean_server``, ``vultr_server``, ``hotaisle_server``) keeps only
its cloud's logic: routes, documented fields, faults and ledger.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """One request as the listener read it."""

    method: str
    path: str
    """Without the query string."""
    query: dict[str, list[str]]
    """Every value of each query parameter, in order (as :func:`urllib.parse.parse_qs`)."""
    headers: dict[str, str]
    """Header names in lower case."""
    raw: bytes
    """The body as sent (empty when there was none)."""

    @property
    def params(self) -> dict[str, str]:
        """The query with the last value of each parameter."""
        return {name: values[-1] for name, values in self.query.items()}

    def json(self) -> Any:
        """The body parsed as JSON, None when empty; ValueError when it is not JSON."""
        return json.loads(self.raw) if self.raw else None

    @property
    def body(self) -> Any:
        """The body parsed as JSON, None when empty, or its text when it is not JSON."""
        try:
            return self.json()
        except ValueError:
            return self.raw.decode(errors="replace")


@dataclass(frozen=True)
class Answer:
    """What to send back: a status, a body and headers, or nothing at all (``drop``)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without answering (a reply lost on the way)."""
    hang: bool = False
    """Answer nothing until the server stops (a reply slower than the client's read
    timeout), then close the connection."""

    @classmethod
    def json(
        cls,
        status: int,
        data: Any,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """``data`` as a JSON body, with ``Content-Type`` and any further ``headers``."""
        return cls(
            status, json.dumps(data).encode(), {"Content-Type": content_type, **(headers or {})}
        )

    @classmethod
    def dropped(cls) -> Answer:
        """Close the connection without answering."""
        return cls(0, drop=True)

    @classmethod
    def hung(cls) -> Answer:
        """Answer nothing until the server stops."""
        return cls(0, hang=True)


Handle = Callable[[Request], Answer]

AfterCreate = Literal["answer", "500", "drop", "hang"]
"""What a local cloud server does once it has committed a create: answer as documented,
answer 500 (the cloud's server-error body), drop the connection, or answer nothing until
the server stops (past the client's read timeout). The last three are the lost answers
after which a client must not rent a second instance."""


def after_create(kind: AfterCreate, created: Answer, server_error: Answer) -> Answer:
    """The answer to a committed create under the fault ``kind``."""
    if kind == "500":
        return server_error
    if kind == "drop":
        return Answer.dropped()
    if kind == "hang":
        return Answer.hung()
    return created


class JsonApiServer:
    """A listener on 127.0.0.1 at an ephemeral port (bound at construction, so :attr:`url`
    is known before :meth:`start`), serving each connection in its own thread."""

    def __init__(self, handle: Handle, *, name: str, poll_interval: float = 0.05) -> None:
        self._listener = _Listener(handle)
        self._poll_interval = poll_interval  # how soon stop() returns
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._started = False
        self._stopped = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._listener.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Serve from a background thread."""
        self._started = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end the open connections, join every thread and close the
        socket. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self._listener.shutdown()
            self._thread.join(timeout=10)
        self._listener.released.set()
        self._listener.hang_up()
        self._listener.server_close()

    def _serve(self) -> None:
        self._listener.serve_forever(poll_interval=self._poll_interval)


class _Listener(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the connection threads

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.released = threading.Event()
        """Set by stop(): hung answers end."""
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """End idle keep-alive connections, so their threads see EOF and can be joined."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Listener
    protocol_version = "HTTP/1.1"
    # One write per response: headers and body apart stall on Nagle + delayed ACK.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        answer = self.server.handle(self._request())
        if answer.hang:
            self.server.released.wait()
        if answer.drop or answer.hang:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _request(self) -> Request:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        return Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={name.lower(): value for name, value in self.headers.items()},
            raw=self.rfile.read(length) if length else b"",
        )
