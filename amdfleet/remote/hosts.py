"""From a :class:`~amdfleet.remote.target.HostTarget` to an open
:class:`~amdfleet.remote.connection.Connection`.

Providers receive a host as the ``HostTarget`` in their props (they are pickled and sent
through the engine), and open the connection inside each method with :func:`open_host`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from amdfleet.remote.connection import Connection
from amdfleet.remote.local import LocalConnection
from amdfleet.remote.ssh import SshTarget, connect
from amdfleet.remote.target import HostTarget

CONNECT_TIMEOUT = 20.0


def open_host(
    target: HostTarget, *, secrets: Iterable[str] = (), timeout: float = CONNECT_TIMEOUT
) -> Connection:
    """Open a connection to ``target``: this machine for a local host, else SSH.

    Raises RemoteError (or HostKeyMismatchError) with a hint when the host cannot be
    reached, presents another host key, or refuses the key.
    """
    if target.is_local:
        return LocalConnection(target.name, secrets=secrets)
    ssh = SshTarget(
        host=target.name,
        address=target.address,
        port=target.port,
        user=target.user,
        key_path=os.path.expanduser(target.key_path),
        host_key=target.host_key,
    )
    return connect(ssh, timeout=timeout, secrets=secrets)
