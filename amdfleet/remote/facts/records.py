"""Host facts as typed records: what one host is, as the fact parsers read it.

Each record turns into plain JSON-able values (``to_dict``, for Pulumi outputs) and back
(``from_dict``, which also turns the integral floats Pulumi hands back into ints)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from amdfleet.remote.facts.values import JsonDict, as_flags, as_int, as_text, gfx_arch, pci_bdf


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as the host's tools report it; ``accelerator`` is a catalog id or None."""

    index: int
    device_id: int | None = None
    subsystem_id: int | None = None
    arch: str | None = None
    market_name: str = ""
    vram_bytes: int | None = None
    bdf: str | None = None
    compute_units: int | None = None
    accelerator: str | None = None

    def to_dict(self) -> JsonDict:
        """Plain JSON-able values, suitable for a Pulumi output."""
        return _plain_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuFacts:
        """Rebuild from :meth:`to_dict` output; integral floats (Pulumi) become ints."""
        return cls(
            index=as_int(data.get("index")) or 0,
            device_id=as_int(data.get("device_id")),
            subsystem_id=as_int(data.get("subsystem_id")),
            arch=gfx_arch(data.get("arch")),
            market_name=as_text(data.get("market_name")),
            vram_bytes=as_int(data.get("vram_bytes")),
            bdf=pci_bdf(data.get("bdf")),
            compute_units=as_int(data.get("compute_units")),
            accelerator=as_text(data.get("accelerator")) or None,
        )


@dataclass(frozen=True)
class NetInterface:
    """One network interface from ``ip -j addr``; addresses are ``addr/prefixlen``."""

    name: str
    state: str
    addresses: tuple[str, ...] = ()

    def to_dict(self) -> JsonDict:
        """Plain JSON-able values, suitable for a Pulumi output."""
        return _plain_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetInterface:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            name=as_text(data.get("name")),
            state=str(data.get("state") or ""),
            addresses=tuple(str(a) for a in data.get("addresses") or ()),
        )


@dataclass(frozen=True)
class RdmaLink:
    """One RDMA port from ``rdma -j link``: device name, port, state and its netdev."""

    name: str
    port: int | None
    state: str
    netdev: str


@dataclass(frozen=True)
class GpuInventory:
    """What one GPU tool reported: its GPUs and, when it prints one, the driver version."""

    gpus: tuple[GpuFacts, ...] = ()
    driver_version: str | None = None


@dataclass(frozen=True)
class AmdSmiVersion:
    """``amd-smi version``; ``amdgpu`` is None when it printed a kernel banner (inbox)."""

    tool: str | None = None
    library: str | None = None
    rocm: str | None = None
    amdgpu: str | None = None


@dataclass(frozen=True)
class HostFacts:
    """Everything preflight and planning need to know about one host.

    ``disk_free_bytes`` is measured on the filesystem holding ``disk_path`` (its nearest
    existing ancestor if it does not exist yet). ``kfd_*``/``dri_*`` tell whether the
    device nodes exist and whether this user can open them read-write.
    """

    hostname: str = ""
    os_name: str = ""
    kernel: str = ""
    cpu_model: str = ""
    cpu_count: int | None = None
    cpu_flags: tuple[str, ...] | None = None
    ram_bytes: int | None = None
    disk_path: str = ""
    disk_free_bytes: int | None = None
    gpus: tuple[GpuFacts, ...] = ()
    rocm_version: str | None = None
    amdgpu_version: str | None = None
    docker_version: str | None = None
    kfd_present: bool = False
    kfd_accessible: bool = False
    dri_nodes: tuple[str, ...] = ()
    dri_accessible: bool = False
    user: str = ""
    uid: int | None = None
    groups: tuple[str, ...] = ()
    shm_bytes: int | None = None
    numa_balancing: int | None = None
    interfaces: tuple[NetInterface, ...] = ()
    rdma_devices: tuple[str, ...] = ()
    default_route_nic: str | None = None

    @property
    def is_root(self) -> bool:
        """Whether the probing user is root (device permissions do not apply)."""
        return self.uid == 0

    def to_dict(self) -> JsonDict:
        """Plain JSON-able values (str/int/bool/None/list/dict), for Pulumi outputs."""
        return _plain_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostFacts:
        """Rebuild from :meth:`to_dict` output; integral floats (Pulumi) become ints."""
        return cls(
            hostname=as_text(data.get("hostname")),
            os_name=as_text(data.get("os_name")),
            kernel=as_text(data.get("kernel")),
            cpu_model=as_text(data.get("cpu_model")),
            cpu_count=as_int(data.get("cpu_count")),
            cpu_flags=as_flags(data.get("cpu_flags")),
            ram_bytes=as_int(data.get("ram_bytes")),
            disk_path=as_text(data.get("disk_path")),
            disk_free_bytes=as_int(data.get("disk_free_bytes")),
            gpus=tuple(GpuFacts.from_dict(g) for g in data.get("gpus") or ()),
            rocm_version=as_text(data.get("rocm_version")) or None,
            amdgpu_version=as_text(data.get("amdgpu_version")) or None,
            docker_version=as_text(data.get("docker_version")) or None,
            kfd_present=bool(data.get("kfd_present")),
            kfd_accessible=bool(data.get("kfd_accessible")),
            dri_nodes=tuple(str(n) for n in data.get("dri_nodes") or ()),
            dri_accessible=bool(data.get("dri_accessible")),
            user=as_text(data.get("user")),
            uid=as_int(data.get("uid")),
            groups=tuple(str(g) for g in data.get("groups") or ()),
            shm_bytes=as_int(data.get("shm_bytes")),
            numa_balancing=as_int(data.get("numa_balancing")),
            interfaces=tuple(NetInterface.from_dict(i) for i in data.get("interfaces") or ()),
            rdma_devices=tuple(str(d) for d in data.get("rdma_devices") or ()),
            default_route_nic=as_text(data.get("default_route_nic")) or None,
        )


def _plain(value: object) -> object:
    if isinstance(value, GpuFacts | NetInterface | HostFacts):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _plain_fields(record: GpuFacts | NetInterface | HostFacts) -> JsonDict:
    return {f.name: _plain(getattr(record, f.name)) for f in fields(record)}
