"""How to reach one host: the connection data the plan carries and providers receive.

:class:`HostTarget` is the one record of "where and how to connect" in amdfleet. The
planner builds it from a stack's :class:`~amdfleet.config.HostSpec` (or, for a cloud
fleet, from the instance the cloud returned), every provider receives it as part of its
props, and :func:`amdfleet.remote.transport.hosts.open_host` turns it into a connection. It holds
no secret: the private key is a *path*, read only at connect time.

Pure data; importing this module imports neither paramiko nor Pulumi.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from amdfleet.addresses import host_port
from amdfleet.config import HostSpec


class HostTarget(BaseModel):
    """One host's connection data. ``name`` is the label used in messages and resource
    names; ``host_key`` is the pinned public key line or ``SHA256:`` fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The host's label in the stack.")
    connection: Literal["ssh", "local"] = Field("ssh", description="ssh, or this machine.")
    address: str = Field("", description="Address the host is reached at (ssh).")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field("root", description="SSH user.")
    key_path: str = Field("", description="Path of the SSH private key (never its content).")
    host_key: str = Field("", description="Pinned host key line or SHA256 fingerprint.")
    cloud_instance: str | None = Field(
        None,
        description="The cloud instance this host is (a cloud stack's node); None for a "
        "host you own. What runs on an instance goes when the instance goes: its resources "
        "read as gone, and delete as done, when the instance no longer answers.",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Left out while unset: a host you own serializes as it always did, so no
        # deployed resource sees its inputs change.
        data = handler(self)
        if isinstance(data, dict) and data.get("cloud_instance") is None:
            data.pop("cloud_instance", None)
        return data

    @classmethod
    def from_spec(cls, host: HostSpec) -> HostTarget:
        """The target for a stack's host entry."""
        return cls(
            name=host.name,
            connection=host.connection,
            address=host.address or "",
            port=host.port,
            user=host.user,
            key_path=host.key_path or "",
            host_key=host.host_key or "",
        )

    @property
    def ssh_address(self) -> str:
        """``address:port`` as messages name the SSH server (IPv6 in brackets)."""
        return host_port(self.address, self.port)

    @property
    def is_local(self) -> bool:
        """Whether commands run on this machine rather than over SSH."""
        return self.connection == "local"
