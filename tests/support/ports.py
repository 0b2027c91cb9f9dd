"""A TCP port nothing listens on, for a server a test starts."""

from __future__ import annotations

import socket


def free_port(address: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``address`` (free until someone binds it)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
