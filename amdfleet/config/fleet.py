"""The ``fleet`` section: SSH (or local) hosts, or cloud instances (:mod:`.cloud`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from amdfleet.addresses import canonical_address, check_address
from amdfleet.config.base import NAME_RE, SpecModel
from amdfleet.config.cloud import CloudFleetSpec
from amdfleet.hostkeys import check_host_key


class HostSpec(SpecModel):
    """One host of an SSH fleet (bare metal you own or rent), or this machine."""

    name: str = Field(
        pattern=NAME_RE,
        description="Short unique label for the host (lowercase, digits, dashes); used in "
        "resource names, logs and errors.",
    )
    connection: Literal["ssh", "local"] = Field(
        "ssh",
        description="'ssh' reaches the host over SSH; 'local' runs commands on the machine "
        "that runs amdfleet (the `local` stack).",
    )
    address: str | None = Field(
        None, description="IP address or DNS name the host is reached at (ssh only)."
    )
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field("root", description="SSH user; needs docker access or sudo-less root.")
    key_path: str | None = Field(
        None,
        description="Path to the SSH private key on the machine running amdfleet. The key "
        "is read at connect time and never stored in state or outputs.",
    )
    host_key: str | None = Field(
        None,
        description="Pinned host key: a public key line ('ssh-ed25519 AAAA...') or an "
        "OpenSSH fingerprint ('SHA256:...'). A host presenting another key is refused. "
        "Get it with `ssh-keyscan -t ed25519 HOST | ssh-keygen -lf -`.",
    )
    private_address: str | None = Field(
        None,
        description="Address other nodes use to reach this one (the cluster network); "
        "defaults to `address`.",
    )
    network_interface: str | None = Field(
        None,
        description="Interface you expect to carry inter-node traffic. amdfleet derives "
        "the interface from the host's facts (the one holding the cluster address) and sets "
        "NCCL/GLOO_SOCKET_IFNAME from it; a different one named here fails the cluster "
        "check before anything starts.",
    )
    rdma_devices: tuple[str, ...] = Field(
        (),
        description="RDMA HCAs for RCCL (NCCL_IB_HCA), e.g. ['ionic_0', 'ionic_1']; empty "
        "means RCCL picks (or falls back to TCP sockets).",
    )

    @field_validator("address", "private_address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)

    @field_validator("host_key")
    @classmethod
    def _unpadded_fingerprint(cls, value: str | None) -> str | None:
        # ssh-keygen prints fingerprints unpadded; a pasted '=' would never match one.
        if value is not None and re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=", value):
            return value[:-1]
        return value

    @model_validator(mode="after")
    def _ssh_fields(self) -> HostSpec:
        if self.connection == "ssh":
            missing = [f for f in ("address", "key_path", "host_key") if not getattr(self, f)]
            if missing:
                raise ValueError(
                    f"ssh host '{self.name}' needs {', '.join(missing)} — add "
                    f"{', '.join(missing)}; pin host_key with `ssh-keyscan -t ed25519 "
                    "HOST | ssh-keygen -lf -` (amdfleet never trusts a key on first use)"
                )
        if self.host_key is not None:
            check_host_key(self.host_key)
        return self

    @property
    def cluster_address(self) -> str | None:
        """The address other nodes use for this host."""
        return self.private_address or self.address


class FleetSpec(SpecModel):
    """Where the engine runs: SSH hosts, or cloud instances. Exactly one of the two."""

    hosts: tuple[HostSpec, ...] = Field(
        (), description="SSH (or local) hosts, one per node, rank 0 (the head) first."
    )
    cloud: CloudFleetSpec | None = Field(None, description="Cloud instances to create.")

    @model_validator(mode="after")
    def _one_kind(self) -> FleetSpec:
        if bool(self.hosts) == (self.cloud is not None):
            raise ValueError(
                "the fleet needs exactly one of hosts or cloud — list SSH/local hosts "
                "under fleet.hosts, or describe instances under fleet.cloud"
            )
        names = [h.name for h in self.hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"host names must be unique; repeated: {', '.join(dupes)} — rename them"
            )
        if any(h.connection == "local" for h in self.hosts) and len(self.hosts) > 1:
            raise ValueError(
                "a 'local' host cannot be combined with other hosts — use ssh hosts "
                "for multi-node fleets"
            )
        return self

    @field_validator("hosts")
    @classmethod
    def _distinct_addresses(cls, hosts: tuple[HostSpec, ...]) -> tuple[HostSpec, ...]:
        seen: dict[tuple[str, int], str] = {}
        for host in hosts:
            if host.connection != "ssh" or not host.address:
                continue
            where = (canonical_address(host.address), host.port)
            if where in seen:
                raise ValueError(
                    f"hosts '{seen[where]}' and '{host.name}' are both {host.address} port "
                    f"{host.port}: both ranks would be planned onto one machine — give each "
                    "node its own address (or remove the duplicate and lower topology.nodes)"
                )
            seen[where] = host.name
        return hosts

    @property
    def node_count(self) -> int:
        """How many nodes the fleet provides."""
        return self.cloud.count if self.cloud else len(self.hosts)
