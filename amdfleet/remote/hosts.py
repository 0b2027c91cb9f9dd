"""From a stack's host entry to an open :class:`~amdfleet.remote.connection.Connection`.

Providers receive a host as plain props (they are pickled and sent through the
engine), and open the connection inside each method with :func:`open_host`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from amdfleet.config import HostSpec
from amdfleet.remote.connection import Connection
from amdfleet.remote.local import LocalConnection
from amdfleet.remote.ssh import SshTarget, connect

CONNECT_TIMEOUT = 20.0


def host_props(host: HostSpec) -> dict[str, Any]:
    """Plain props describing how to reach ``host`` (no secret: the key is a path)."""
    return {
        "name": host.name,
        "connection": host.connection,
        "address": host.address or "",
        "port": host.port,
        "user": host.user,
        "key_path": host.key_path or "",
        "host_key": host.host_key or "",
    }


def open_host(
    props: Mapping[str, Any], *, secrets: Iterable[str] = (), timeout: float = CONNECT_TIMEOUT
) -> Connection:
    """Open a connection to the host described by ``props`` (see :func:`host_props`).

    Raises RemoteError (or HostKeyMismatchError) with a hint when the host cannot be
    reached, presents another host key, or refuses the key.
    """
    if props.get("connection") == "local":
        return LocalConnection(str(props["name"]), secrets=secrets)
    target = SshTarget(
        host=str(props["name"]),
        address=str(props["address"]),
        port=int(props.get("port", 22)),
        user=str(props.get("user", "root")),
        key_path=os.path.expanduser(str(props["key_path"])),
        host_key=str(props["host_key"]),
    )
    return connect(target, timeout=timeout, secrets=secrets)
