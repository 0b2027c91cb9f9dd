"""A real TCP relay on loopback in front of a real server (an SSH host of the lab).

It lets a test decide, connection by connection, what a client connecting to a host
sees, without any timing: its port is bound at once but refuses connections (the kernel
answers RST) until :meth:`TcpRelay.listen`; the first ``drop`` connections it accepts are
closed before a byte is sent (with a reset when ``reset``), as an sshd still starting or
over its ``MaxStartups`` does; every later one is forwarded to ``upstream`` byte for byte.
``accepted`` counts the TCP connections that reached it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

_CHUNK = 65536


class TcpRelay:
    """A loopback port in front of ``upstream``; use as a context manager."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        drop: int = 0,
        reset: bool = False,
        listening: bool = True,
        address: str = "127.0.0.1",
    ) -> None:
        self.upstream = upstream
        self.accepted = 0
        self._drop = drop
        self._reset = reset
        self._server = socket.socket()
        self._server.bind((address, 0))
        self.address, self.port = self._server.getsockname()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        if listening:
            self.listen()

    def listen(self) -> None:
        """Start accepting: connects from now on reach the relay instead of a refusal."""
        self._server.listen(16)
        self._start(self._accept_loop)

    def close(self) -> None:
        """Stop accepting, close every relayed connection and wait for the threads."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
        self._server.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
                dropped = self.accepted <= self._drop
            if dropped:
                self._hang_up(client)
            else:
                self._relay(client)

    def _hang_up(self, client: socket.socket) -> None:
        if self._reset:  # linger 0: close() sends RST instead of FIN
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream, timeout=10)
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [client, upstream]
        self._start(lambda: _pump(client, upstream))
        self._start(lambda: _pump(upstream, client))

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass  # either side closed
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
