"""From a :class:`~amdfleet.remote.transport.target.HostTarget` to an open
:class:`~amdfleet.remote.transport.connection.Connection`.

Providers receive a host's target in their props (they are pickled and sent through the
engine), and open the connection inside each method with :func:`open_host`.
"""

from __future__ import annotations

from collections.abc import Iterable

from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.local import LocalConnection
from amdfleet.remote.transport.retry import DEFAULT_RETRY, ConnectRetry
from amdfleet.remote.transport.ssh import connect
from amdfleet.remote.transport.target import HostTarget

CONNECT_TIMEOUT = 20.0


def open_host(
    target: HostTarget,
    *,
    secrets: Iterable[str] = (),
    timeout: float = CONNECT_TIMEOUT,
    retry: ConnectRetry = DEFAULT_RETRY,
) -> Connection:
    """Open a connection to ``target``: this machine when its connection is ``local``,
    otherwise SSH with its pinned host key (a host that does not answer yet is retried
    as ``retry`` says; see :func:`amdfleet.remote.transport.ssh.connect`).

    Raises HostUnreachableError when the host still does not answer after the retries,
    HostKeyMismatchError when it presents another host key, RemoteError (with a hint)
    when it refuses the key or is not an SSH server.
    """
    if target.is_local:
        return LocalConnection(target.name, secrets=secrets)
    return connect(target, timeout=timeout, secrets=secrets, retry=retry)
