"""One command on an SSH channel: start it, feed its stdin, drain its output within a
deadline."""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import paramiko

from amdfleet.remote.transport.connection import OutputCollector

_READ_SIZE = 65536


_POLL = 0.5


def run_on_channel(
    channel: paramiko.Channel,
    command: str,
    stdin: str | None,
    collector: OutputCollector,
    deadline: float,
) -> int | None:
    """Execute on an open channel; the exit status, or None when the deadline passed."""
    channel.exec_command(command)
    _send_stdin(channel, stdin.encode() if stdin is not None else b"")
    if not _drain(channel, collector, deadline):
        return None
    if not channel.status_event.wait(remaining(deadline)):
        return None
    return int(channel.recv_exit_status())


def _send_stdin(channel: paramiko.Channel, data: bytes) -> None:
    """Send stdin then EOF; a command that exits without reading it is not an error."""
    try:
        if data:
            channel.sendall(data)
        _send_eof(channel)
    except (OSError, paramiko.SSHException):
        if not (channel.closed or channel.eof_received or channel.exit_status_ready()):
            raise


def _send_eof(channel: paramiko.Channel, *, patience: float = 30.0) -> None:
    """Send EOF on ``channel`` so that it can never follow the channel's CLOSE.

    paramiko's ``shutdown_write`` builds the EOF under the channel lock but sends it
    after releasing it. When the command has already exited, the transport thread can
    answer the server's CLOSE in between; OpenSSH then receives an EOF for a channel it
    has freed and drops the whole connection ("ieof packet referred to nonexistent
    channel"), killing every other command on the session. Here the EOF is built and
    sent while holding the transport's send lock, which the transport thread needs to
    send the CLOSE: either the EOF goes first, or the CLOSE was built first and already
    counts as our EOF (then nothing is sent). The transport thread never holds the send
    lock while waiting for a channel lock, so this cannot deadlock.
    """
    transport = channel.get_transport()
    send_lock = getattr(transport, "clear_to_send_lock", None)
    if transport is None or send_lock is None:  # another paramiko: its own method
        channel.shutdown_write()
        return
    give_up = time.monotonic() + patience
    while True:  # as Transport._send_user_message: wait out a key exchange
        transport.clear_to_send.wait(0.1)
        if not transport.is_active():
            raise EOFError("the SSH transport is closed")
        with send_lock:
            if transport.clear_to_send.is_set():
                with channel.lock:
                    message = None if channel.closed else channel._send_eof()  # type: ignore[attr-defined]
                if message is not None:
                    transport._send_message(message)  # type: ignore[attr-defined]
                return
        if time.monotonic() > give_up:
            raise paramiko.SSHException("key exchange did not finish; cannot send EOF")


def _drain(channel: paramiko.Channel, collector: OutputCollector, deadline: float) -> bool:
    """Read stdout/stderr until the remote side closes them. False on deadline."""
    fd = channel.fileno()
    while True:
        _read_ready(channel, collector)
        if channel.eof_received or channel.closed:
            _read_ready(channel, collector)
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        select.select([fd], [], [], min(remaining, _POLL))


def _read_ready(channel: paramiko.Channel, collector: OutputCollector) -> None:
    while channel.recv_ready():
        collector.add(channel.recv(_READ_SIZE))
    while channel.recv_stderr_ready():
        collector.add(channel.recv_stderr(_READ_SIZE), stderr=True)


@contextlib.contextmanager
def watchdog(deadline: float, on_expiry: Any) -> Iterator[threading.Event]:
    """Call ``on_expiry`` (closing a channel) if the block outlives ``deadline``.

    paramiko waits without a timeout in a few places (exec and subsystem requests);
    closing the channel from another thread is what unblocks them.
    """
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        on_expiry()

    timer = threading.Timer(remaining(deadline), expire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (``time.monotonic``), at least 1 ms."""
    return max(deadline - time.monotonic(), 0.001)
