"""Host facts: typed records and the pure parsers that build them from command output.

Every ``parse_*`` function takes the text one command printed and returns a value. None
of them does I/O and none raises on unknown, truncated or garbled input: what cannot be
read comes back as ``None``, ``""``, ``False`` or an empty tuple, so a host without
ROCm (a CPU test box) or with an older tool simply yields fewer facts. The preflight
checks decide what a missing fact means.

GPUs are identified by PCI device id (physical or SR-IOV virtual function, or the
physical part's id that a VF reports as its subsystem id) or by gfx target plus VRAM,
never by marketing name: names vary by ROCm release and virtualisation ("MI300X-O",
"AMD Instinct Mi325X VF"), ids do not.

Sizes: amd-smi prints ``MB`` meaning MiB (``196592 MB`` on an MI300X is exactly the
``201310208 KB`` rocminfo reports for the same pool), so units are binary throughout.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from amdfleet.catalog.gpus import ACCELERATORS, accelerator_for_device

JsonDict = dict[str, Any]

GIB = 1024**3
VRAM_TOLERANCE = 0.05
"""Relative slack when matching reported VRAM to a catalog size (usable < nominal)."""

_ROCM_SMI_LINE = r"^GPU\[(\d+)\][ \t]*:[ \t]*([^:\n]+?):[ \t]*(.*?)[ \t]*$"


# --------------------------------------------------------------------------- records


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
            index=_int(data.get("index")) or 0,
            device_id=_int(data.get("device_id")),
            subsystem_id=_int(data.get("subsystem_id")),
            arch=_arch(data.get("arch")),
            market_name=_text(data.get("market_name")),
            vram_bytes=_int(data.get("vram_bytes")),
            bdf=_bdf(data.get("bdf")),
            compute_units=_int(data.get("compute_units")),
            accelerator=_text(data.get("accelerator")) or None,
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
            name=_text(data.get("name")),
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
            hostname=_text(data.get("hostname")),
            os_name=_text(data.get("os_name")),
            kernel=_text(data.get("kernel")),
            cpu_model=_text(data.get("cpu_model")),
            cpu_count=_int(data.get("cpu_count")),
            cpu_flags=_flags(data.get("cpu_flags")),
            ram_bytes=_int(data.get("ram_bytes")),
            disk_path=_text(data.get("disk_path")),
            disk_free_bytes=_int(data.get("disk_free_bytes")),
            gpus=tuple(GpuFacts.from_dict(g) for g in data.get("gpus") or ()),
            rocm_version=_text(data.get("rocm_version")) or None,
            amdgpu_version=_text(data.get("amdgpu_version")) or None,
            docker_version=_text(data.get("docker_version")) or None,
            kfd_present=bool(data.get("kfd_present")),
            kfd_accessible=bool(data.get("kfd_accessible")),
            dri_nodes=tuple(str(n) for n in data.get("dri_nodes") or ()),
            dri_accessible=bool(data.get("dri_accessible")),
            user=_text(data.get("user")),
            uid=_int(data.get("uid")),
            groups=tuple(str(g) for g in data.get("groups") or ()),
            shm_bytes=_int(data.get("shm_bytes")),
            numa_balancing=_int(data.get("numa_balancing")),
            interfaces=tuple(NetInterface.from_dict(i) for i in data.get("interfaces") or ()),
            rdma_devices=tuple(str(d) for d in data.get("rdma_devices") or ()),
            default_route_nic=_text(data.get("default_route_nic")) or None,
        )


# ------------------------------------------------------------- generic Linux facts


def parse_line(text: str) -> str:
    """First non-empty line, stripped (``uname -n``, ``uname -r``, ``id -un``)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def parse_int(text: str) -> int | None:
    """A lone integer (``nproc``, ``id -u``, ``/proc/sys/kernel/numa_balancing``)."""
    return _int(parse_line(text))


def parse_os_release(text: str) -> str:
    """``PRETTY_NAME`` from ``/etc/os-release`` (falls back to ``NAME VERSION``)."""
    values = _os_release_values(text)
    fallback = " ".join(v for v in (values.get("NAME"), values.get("VERSION")) if v)
    return values.get("PRETTY_NAME") or fallback


def parse_cpu_model(text: str) -> str:
    """The CPU model from ``/proc/cpuinfo`` lines (``model name`` or ``Hardware``)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "hardware", "cpu model"):
            return value.strip()
    return ""


ENGINE_CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)
"""The CPU flags (of /proc/cpuinfo's long list) that decide what a CPU engine computes
correctly and fast: the only ones the facts keep."""


def parse_cpu_flags(text: str) -> tuple[str, ...] | None:
    """The :data:`ENGINE_CPU_FLAGS` a ``flags`` line of ``/proc/cpuinfo`` lists (None when
    there is no such line: an ARM host says ``Features``, which holds none of them)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return tuple(flag for flag in ENGINE_CPU_FLAGS if flag in present)
    return None


def parse_meminfo_total(text: str) -> int | None:
    """``MemTotal`` from ``/proc/meminfo``, in bytes."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def parse_df_avail(text: str) -> int | None:
    """Bytes available from ``df -B1 --output=avail PATH`` (header line, then a number)."""
    numbers = [_int(line) for line in text.splitlines()[1:]]
    return next((n for n in numbers if n is not None), None)


def parse_df_size(text: str) -> int | None:
    """Total size in bytes from ``df -B1 PATH`` (the ``1B-blocks`` column).

    Tolerates the filesystem name wrapping onto its own line.
    """
    tokens = " ".join(text.splitlines()[1:]).split()
    return _int(tokens[1]) if len(tokens) > 1 else None


def parse_groups(text: str) -> tuple[str, ...]:
    """Group names from ``id -Gn``."""
    return tuple(parse_line(text).split())


def parse_ls(text: str) -> tuple[str, ...]:
    """Entry names from ``ls DIR`` (e.g. ``/dev/dri``), sorted."""
    return tuple(sorted(name for name in text.split() if name))


def parse_device_access(text: str) -> tuple[bool, bool]:
    """``(present, accessible)`` from the probe's device check (``rw``/``denied``/``absent``).

    The probe prints ``rw`` when ``test -r`` and ``test -w`` pass on the node(s),
    ``denied`` when they exist but are not both readable and writable.
    """
    word = parse_line(text)
    return word in ("rw", "denied"), word == "rw"


def parse_ip_addr(text: str) -> tuple[NetInterface, ...]:
    """Interfaces from ``ip -j addr``."""
    entries = _json_list(text)
    return tuple(_interface(e) for e in entries if _text(e.get("ifname")))


def parse_default_route(text: str) -> str | None:
    """The interface of the default route from ``ip -j route show default``."""
    return next((_text(r.get("dev")) for r in _json_list(text) if _text(r.get("dev"))), None)


def parse_docker_version(text: str) -> str | None:
    """Server version from ``docker version --format '{{.Server.Version}}'``.

    None when docker is absent or its daemon is unreachable (the command then prints
    an empty line or an error).
    """
    line = parse_line(text)
    return line if re.fullmatch(r"\d+\.\d+[\w.+~-]*", line) else None


def parse_rocm_version_file(text: str) -> str | None:
    """ROCm release from ``/opt/rocm/.info/version`` (``6.4.0-47`` → ``6.4.0``)."""
    return _version(parse_line(text))


def parse_rdma_link(text: str) -> tuple[RdmaLink, ...]:
    """RDMA ports from ``rdma -j link`` (``[]`` or nothing when there are none)."""
    return tuple(_rdma_link(e) for e in _json_list(text) if _text(e.get("ifname")))


# ------------------------------------------------------------------- driver/ROCm


def parse_amdgpu_module_version(text: str) -> str | None:
    """``/sys/module/amdgpu/version`` (present with the DKMS driver only)."""
    return _version(parse_line(text))


def parse_amd_smi_version(text: str) -> AmdSmiVersion:
    """Versions from ``amd-smi version`` (one ``Key: value | Key: value ...`` line).

    With the inbox (kernel) driver amd-smi prints the kernel banner as the amdgpu
    version; that is reported as None.
    """
    parts = dict(_key_value(part) for part in parse_line(text).split("|"))
    return AmdSmiVersion(
        tool=_text(parts.get("amdsmi tool")) or None,
        library=_text(parts.get("amdsmi library version")) or None,
        rocm=_version(parts.get("rocm version", "")),
        amdgpu=_clean_version(parts.get("amdgpu version", "")),
    )


# --------------------------------------------------------------------- GPU tools


def parse_amd_smi_static_json(text: str) -> GpuInventory:
    """``amd-smi static --json``: a bare list before ROCm 7, ``{"gpu_data": [...]}`` after.

    Invalid or truncated JSON yields an empty inventory.
    """
    records = _amd_smi_json_records(_load_json(text))
    return _amd_smi_inventory(records)


def parse_amd_smi_static_text(text: str) -> GpuInventory:
    """``amd-smi static`` text (``GPU: n`` blocks of indented ``KEY: value`` sections)."""
    return _amd_smi_inventory(_amd_smi_text_records(text))


def parse_amd_smi_list(text: str) -> GpuInventory:
    """``amd-smi list`` / ``list -e``: index and BDF of every GPU."""
    return _amd_smi_inventory(_amd_smi_text_records(text))


def parse_rocm_smi_concise(text: str) -> GpuInventory:
    """Index, device id and (old layout) name from the plain ``rocm-smi`` table.

    Both layouts: old (``[Model : Revision]`` plus a name line under each row) and v6x
    (``Node  IDs (DID, GUID)``).
    """
    gpus: list[GpuFacts] = []
    for line in _concise_rows(text.splitlines()):
        row = re.match(r"^(\d+)\s", line)
        if row:
            gpus.append(GpuFacts(index=int(row.group(1)), device_id=_first_hex_id(line)))
        elif gpus and line.strip() and not gpus[-1].market_name:
            gpus[-1] = replace(gpus[-1], market_name=line.strip())
    return GpuInventory(tuple(gpus))


def parse_rocm_smi_info(text: str) -> GpuInventory:
    """GPUs from ``rocm-smi`` ``GPU[n] : Key: value`` lines, and its driver version.

    Covers ``--showproductname``, ``--showid``, ``--showbus``, ``--showmeminfo vram``
    and ``-a``, with tabs or with whitespace collapsed. ``Device ID`` wins over ``Card
    model`` for the device id.
    """
    per_gpu: dict[int, dict[str, str]] = {}
    for match in re.finditer(_ROCM_SMI_LINE, text, re.M):
        per_gpu.setdefault(int(match.group(1)), {}).setdefault(
            match.group(2).strip().lower(), match.group(3)
        )
    gpus = tuple(_gpu_from_rocm_smi(index, keys) for index, keys in sorted(per_gpu.items()))
    driver = re.search(r"^Driver version:\s*(\S+)", text, re.M | re.I)
    return GpuInventory(gpus, driver.group(1) if driver else None)


def parse_rocminfo(text: str) -> GpuInventory:
    """GPU agents from ``rocminfo`` (CPU agents skipped), numbered in agent order.

    The driver version is the ``ROCk module version`` line when printed. BDFs are
    decoded from ``BDFID``, which holds no PCI domain: domain 0000 is assumed.
    """
    agents = [lines for lines in _rocminfo_agents(text) if _is_gpu_agent(lines)]
    rock = re.search(r"ROCk module version\s+(\S+)", text)
    gpus = tuple(_gpu_from_rocminfo(index, lines) for index, lines in enumerate(agents))
    return GpuInventory(gpus, _version(rock.group(1)) if rock else None)


# ---------------------------------------------------------- combining and matching


def merge_gpus(primary: Sequence[GpuFacts], *others: Sequence[GpuFacts]) -> tuple[GpuFacts, ...]:
    """Fill the unknown fields of ``primary`` GPUs from other tools' reports.

    A GPU's counterpart is the one with the same BDF; only when either side has no BDFs
    at all does the same index count, and then only if both list as many GPUs.
    """
    merged = list(primary)
    for other in others:
        merged = [_fill(gpu, _counterpart(gpu, other, len(merged))) for gpu in merged]
    return tuple(merged)


def identify(gpus: Iterable[GpuFacts]) -> tuple[GpuFacts, ...]:
    """Set each GPU's ``accelerator`` from the catalog (see :func:`match_accelerator`)."""
    return tuple(replace(gpu, accelerator=match_accelerator(gpu)) for gpu in gpus)


def match_accelerator(gpu: GpuFacts) -> str | None:
    """The catalog id for this GPU, or None.

    By device id, then subsystem id (a VF reports its physical part there), each
    checked against the gfx target when known. Only a GPU that reports no device id is
    matched by gfx target plus VRAM, and only when exactly one catalog accelerator fits
    (gfx942 at 192 GiB is an MI300X; gfx950 at 288 GiB fits two: None).
    """
    for pci_id in (gpu.device_id, gpu.subsystem_id):
        found = accelerator_for_device(pci_id, gpu.arch) if pci_id is not None else None
        if found is not None:
            return found.id
    if gpu.device_id is not None:
        return None  # a part we do not know, even if its gfx target and VRAM look familiar
    fits = [a.id for a in ACCELERATORS.values() if _fits_arch_and_vram(gpu, a.arch, a.memory_gib)]
    return fits[0] if len(fits) == 1 else None


def vram_matches(vram_bytes: int | None, memory_gib: float) -> bool:
    """Whether a reported VRAM size is within :data:`VRAM_TOLERANCE` of a catalog size."""
    if vram_bytes is None or memory_gib <= 0:
        return False
    return abs(vram_bytes / GIB - memory_gib) <= VRAM_TOLERANCE * memory_gib


# ----------------------------------------------------------------- value helpers

_MISSING = frozenset({"", "n/a", "na", "none", "null", "unknown", "not supported"})
_UNITS = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
}


def _text(value: object) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    text = str(value).strip()
    return "" if text.lower() in _MISSING else text


def _flags(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list | tuple):
        return None
    return tuple(str(flag) for flag in value)


def _int(value: object) -> int | None:
    """An int from an int, an integral float, or a decimal or ``0x`` hex string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = _text(value)
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        return None


def _leading_int(value: object) -> int | None:
    match = re.match(r"\s*(\d+)", _text(value))
    return int(match.group(1)) if match else None


def _version(value: object) -> str | None:
    match = re.search(r"\d+(?:\.\d+)+", _text(value))
    return match.group(0) if match else None


def _clean_version(value: object) -> str | None:
    """A version only if the value is one (not a kernel banner that contains numbers)."""
    text = _text(value)
    return text if re.fullmatch(r"\d+(?:\.\d+)+(?:[-+][\w.]+)*", text) else None


def _arch(value: object) -> str | None:
    """``gfx942`` from ``gfx942``, ``GFX942`` or ``gfx942:sramecc+:xnack-``."""
    target = _text(value).lower().split(":")[0]
    return target if re.fullmatch(r"gfx[0-9a-f]+", target) else None


def _bdf(value: object) -> str | None:
    """A PCI address as ``dddd:bb:dd.f`` (lowercase, domain added if absent)."""
    text = _text(value).lower()
    if not re.fullmatch(r"([0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", text):
        return None
    return text if text.count(":") == 2 else f"0000:{text}"


def _bdf_from_id(value: object) -> str | None:
    """Decode rocminfo's ``BDFID`` (bus << 8 | device << 3 | function)."""
    bdfid = _int(value)
    if bdfid is None or not 0 < bdfid <= 0xFFFF:
        return None
    return f"0000:{bdfid >> 8:02x}:{(bdfid >> 3) & 0x1F:02x}.{bdfid & 0x7}"


def _size_bytes(value: object) -> int | None:
    """Bytes from amd-smi sizes: ``{"value": n, "unit": "MB"}``, ``"n MB"`` or bare MB."""
    if isinstance(value, dict):
        return _scaled(value.get("value"), _text(value.get("unit")) or "MB")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _scaled(value, "MB")
    number, _, unit = _text(value).partition(" ")
    return _scaled(number, unit.strip() or "MB")


def _scaled(number: object, unit: str) -> int | None:
    amount = _int(number)
    factor = _UNITS.get(unit.lower())
    return amount * factor if amount is not None and factor is not None else None


def _first_hex_id(line: str) -> int | None:
    match = re.search(r"\b0x[0-9a-fA-F]{4}\b", line)
    return int(match.group(0), 16) if match else None


def _key_value(part: str) -> tuple[str, str]:
    key, _, value = part.partition(":")
    return key.strip().lower(), value.strip()


def _plain(value: object) -> object:
    if isinstance(value, GpuFacts | NetInterface | HostFacts):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _plain_fields(record: GpuFacts | NetInterface | HostFacts) -> JsonDict:
    return {f.name: _plain(getattr(record, f.name)) for f in fields(record)}


# ------------------------------------------------------------ Linux parse helpers


def _os_release_values(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if sep and key.strip().isidentifier():
            values[key.strip()] = _unquote(raw.strip())
    return values


def _unquote(raw: str) -> str:
    try:
        words = shlex.split(raw)
    except ValueError:
        return raw.strip("\"'")
    return " ".join(words)


def _json_list(text: str) -> list[JsonDict]:
    data = _load_json(text)
    if not isinstance(data, list):
        return []
    return [entry for entry in data if isinstance(entry, dict)]


def _load_json(text: str) -> Any:
    """Parse JSON, skipping any banner lines a tool printed before it; None if invalid."""
    for start in (m.start() for m in re.finditer(r"^[\[{]", text, re.M)):
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except ValueError:
            continue
    return None


def _interface(entry: JsonDict) -> NetInterface:
    infos = [a for a in entry.get("addr_info") or () if isinstance(a, dict)]
    addresses = tuple(_address(a) for a in infos if _text(a.get("local")))
    state = str(entry.get("operstate") or "")  # "UNKNOWN" is a real state (loopback)
    return NetInterface(_text(entry.get("ifname")), state, addresses)


def _address(info: JsonDict) -> str:
    prefix = _int(info.get("prefixlen"))
    local = _text(info.get("local"))
    return local if prefix is None else f"{local}/{prefix}"


def _rdma_link(entry: JsonDict) -> RdmaLink:
    return RdmaLink(
        name=_text(entry.get("ifname")),
        port=_int(entry.get("port")),
        state=_text(entry.get("state")),
        netdev=_text(entry.get("netdev")),
    )


# ------------------------------------------------------------- amd-smi helpers


_AMD_SMI_GPU_KEYS = frozenset({"gpu", "asic", "bus", "vram", "board", "driver"})


def _amd_smi_json_records(data: Any) -> list[tuple[int, JsonDict]]:
    entries = data.get("gpu_data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return []
    records: list[tuple[int, JsonDict]] = []
    for position, entry in enumerate(entries):
        # another tool's JSON list (rdma link, ip addr) is not a list of GPUs
        if isinstance(entry, dict) and not entry.keys().isdisjoint(_AMD_SMI_GPU_KEYS):
            index = _int(entry.get("gpu"))
            records.append((position if index is None else index, entry))
    return records


def _amd_smi_text_records(text: str) -> list[tuple[int, JsonDict]]:
    """``GPU: n`` blocks as nested dicts with lowercase keys, like the JSON shape."""
    records: list[tuple[int, JsonDict]] = []
    stack: list[tuple[int, JsonDict]] = []
    for line in text.splitlines():
        header = re.fullmatch(r"GPU:\s*(\d+)\s*", line)
        if header:
            stack = [(-1, {})]
            records.append((int(header.group(1)), stack[0][1]))
        elif stack and ":" in line:
            _nest(stack, line)
    return records


def _nest(stack: list[tuple[int, JsonDict]], line: str) -> None:
    indent = len(line) - len(line.lstrip())
    key, value = _key_value(line)
    while len(stack) > 1 and stack[-1][0] >= indent:
        stack.pop()
    if value:
        stack[-1][1][key] = value
        return
    child: JsonDict = {}
    stack[-1][1][key] = child
    stack.append((indent, child))


def _amd_smi_inventory(records: list[tuple[int, JsonDict]]) -> GpuInventory:
    gpus = tuple(_gpu_from_amd_smi(index, record) for index, record in records)
    drivers = (_version(_section(record, "driver").get("version")) for _, record in records)
    return GpuInventory(gpus, next((d for d in drivers if d), None))


def _gpu_from_amd_smi(index: int, record: JsonDict) -> GpuFacts:
    asic = _section(record, "asic")
    bus = _section(record, "bus")
    return GpuFacts(
        index=index,
        device_id=_int(asic.get("device_id")),
        subsystem_id=_int(asic.get("subsystem_id")),
        arch=_arch(asic.get("target_graphics_version")),
        market_name=_text(asic.get("market_name")),
        vram_bytes=_size_bytes(_section(record, "vram").get("size")),
        bdf=_bdf(bus.get("bdf") or record.get("bdf")),
        compute_units=_int(asic.get("num_compute_units")),
    )


def _section(record: JsonDict, name: str) -> JsonDict:
    value = record.get(name)
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------ rocm-smi helpers


def _concise_rows(lines: list[str]) -> list[str]:
    """Lines between the ``====`` rule under the ``Device`` header and the next rule."""
    header = next((i for i, line in enumerate(lines) if line.startswith("Device ")), None)
    if header is None:
        return []
    rules = [i for i, line in enumerate(lines) if i > header and _is_rule(line)]
    end = rules[1] if len(rules) > 1 else len(lines)
    return lines[rules[0] + 1 : end] if rules else []


def _is_rule(line: str) -> bool:
    return len(line.strip()) > 3 and set(line.strip()) == {"="}


def _gpu_from_rocm_smi(index: int, keys: Mapping[str, str]) -> GpuFacts:
    return GpuFacts(
        index=index,
        device_id=_int(keys.get("device id")) or _int(keys.get("card model")),
        subsystem_id=_int(keys.get("subsystem id")),
        arch=_arch(keys.get("gfx version")),
        market_name=_text(keys.get("card series")),
        vram_bytes=_int(keys.get("vram total memory (b)")),
        bdf=_bdf(keys.get("pci bus")),
    )


# ------------------------------------------------------------ rocminfo helpers


def _rocminfo_agents(text: str) -> list[list[str]]:
    agents: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"Agent\s+\d+", line.strip()) and not line.startswith(" "):
            agents.append([])
        elif agents:
            agents[-1].append(line)
    return agents


def _agent_values(lines: list[str]) -> dict[str, str]:
    """Agent-level ``Key: value`` pairs; the first occurrence wins (ISA names repeat)."""
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            values.setdefault(key.strip().lower(), value.strip())
    return values


def _is_gpu_agent(lines: list[str]) -> bool:
    values = _agent_values(lines)
    kind = values.get("device type", "").upper()
    return kind == "GPU" or (not kind and values.get("name", "").startswith("gfx"))


def _gpu_from_rocminfo(index: int, lines: list[str]) -> GpuFacts:
    values = _agent_values(lines)
    return GpuFacts(
        index=index,
        device_id=_leading_int(values.get("chip id")),
        arch=_arch(values.get("name")),
        market_name=_text(values.get("marketing name")),
        vram_bytes=_coarse_pool_bytes(lines),
        bdf=_bdf_from_id(values.get("bdfid")),
        compute_units=_leading_int(values.get("compute unit")),
    )


def _coarse_pool_bytes(lines: list[str]) -> int | None:
    """Size of the first GLOBAL coarse-grained pool (the device's VRAM).

    Real rocminfo puts ``Segment:`` and ``Size:`` on separate lines; condensed copies
    put ``Pool 1: GLOBAL; COARSE GRAINED   268419072 KB`` on one.
    """
    pending = False
    for line in lines:
        if "GLOBAL" in line and "COARSE GRAINED" in line:
            inline = re.search(r"(\d+)\s*KB\s*$", line)
            if inline:
                return int(inline.group(1)) * 1024
            pending = True
        elif pending and line.strip().startswith("Size:"):
            size = _leading_int(line.partition(":")[2])
            return size * 1024 if size is not None else None
    return None


# ---------------------------------------------------------------- merge helpers


def _counterpart(gpu: GpuFacts, others: Sequence[GpuFacts], count: int) -> GpuFacts | None:
    if gpu.bdf and any(other.bdf for other in others):
        return next((other for other in others if other.bdf == gpu.bdf), None)
    if len(others) != count:
        return None
    return next((other for other in others if other.index == gpu.index), None)


def _fill(gpu: GpuFacts, other: GpuFacts | None) -> GpuFacts:
    if other is None:
        return gpu
    missing = {
        f.name: getattr(other, f.name)
        for f in fields(gpu)
        if f.name not in ("index", "accelerator") and getattr(gpu, f.name) in (None, "")
    }
    return replace(gpu, **missing)


def _fits_arch_and_vram(gpu: GpuFacts, arch: str, memory_gib: float) -> bool:
    return gpu.arch is not None and gpu.arch == arch and vram_matches(gpu.vram_bytes, memory_gib)
