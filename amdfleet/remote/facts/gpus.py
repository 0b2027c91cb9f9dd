"""GPU facts: the GPUs amd-smi, rocm-smi and rocminfo report, merged and matched to the
catalog.

GPUs are identified by PCI device id (physical or SR-IOV virtual function, or the
physical part's id that a VF reports as its subsystem id) or by gfx target plus VRAM,
never by marketing name: names vary by ROCm release and virtualisation ("MI300X-O",
"AMD Instinct Mi325X VF"), ids do not.

Sizes: amd-smi prints ``MB`` meaning MiB (``196592 MB`` on an MI300X is exactly the
``201310208 KB`` rocminfo reports for the same pool), so units are binary throughout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from amdfleet.catalog.gpus import ACCELERATORS, accelerator_for_device
from amdfleet.remote.facts.records import GpuFacts, GpuInventory
from amdfleet.remote.facts.registry import Fact, register
from amdfleet.remote.facts.values import (
    JsonDict,
    as_int,
    as_text,
    bdf_from_id,
    first_hex_id,
    gfx_arch,
    key_value,
    leading_int,
    load_json,
    pci_bdf,
    size_bytes,
    version_in,
)

GIB = 1024**3
VRAM_TOLERANCE = 0.05
"""Relative slack when matching reported VRAM to a catalog size (usable < nominal)."""

_ROCM_SMI_LINE = r"^GPU\[(\d+)\][ \t]*:[ \t]*([^:\n]+?):[ \t]*(.*?)[ \t]*$"


# ------------------------------------------------------------- generic Linux facts


# ------------------------------------------------------------------- driver/ROCm


# --------------------------------------------------------------------- GPU tools


def parse_amd_smi_static_json(text: str) -> GpuInventory:
    """``amd-smi static --json``: a bare list before ROCm 7, ``{"gpu_data": [...]}`` after.

    Invalid or truncated JSON yields an empty inventory.
    """
    records = _amd_smi_json_records(load_json(text))
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
            gpus.append(GpuFacts(index=int(row.group(1)), device_id=first_hex_id(line)))
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
    return GpuInventory(gpus, version_in(rock.group(1)) if rock else None)


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


# ------------------------------------------------------------ Linux parse helpers


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
            index = as_int(entry.get("gpu"))
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
    key, value = key_value(line)
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
    drivers = (version_in(_section(record, "driver").get("version")) for _, record in records)
    return GpuInventory(gpus, next((d for d in drivers if d), None))


def _gpu_from_amd_smi(index: int, record: JsonDict) -> GpuFacts:
    asic = _section(record, "asic")
    bus = _section(record, "bus")
    return GpuFacts(
        index=index,
        device_id=as_int(asic.get("device_id")),
        subsystem_id=as_int(asic.get("subsystem_id")),
        arch=gfx_arch(asic.get("target_graphics_version")),
        market_name=as_text(asic.get("market_name")),
        vram_bytes=size_bytes(_section(record, "vram").get("size")),
        bdf=pci_bdf(bus.get("bdf") or record.get("bdf")),
        compute_units=as_int(asic.get("num_compute_units")),
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
        device_id=as_int(keys.get("device id")) or as_int(keys.get("card model")),
        subsystem_id=as_int(keys.get("subsystem id")),
        arch=gfx_arch(keys.get("gfx version")),
        market_name=as_text(keys.get("card series")),
        vram_bytes=as_int(keys.get("vram total memory (b)")),
        bdf=pci_bdf(keys.get("pci bus")),
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
        device_id=leading_int(values.get("chip id")),
        arch=gfx_arch(values.get("name")),
        market_name=as_text(values.get("marketing name")),
        vram_bytes=_coarse_pool_bytes(lines),
        bdf=bdf_from_id(values.get("bdfid")),
        compute_units=leading_int(values.get("compute unit")),
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
            size = leading_int(line.partition(":")[2])
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


# ------------------------------------------------------------------------- facts
# GPU sources in order of preference; the probe runs amd-smi's text form only if its
# JSON failed, and rocm-smi only if amd-smi is unusable; rocminfo always runs.

_ROCM_SMI = "rocm-smi --showproductname --showid --showbus --showdriverversion --showmeminfo vram"

AMD_SMI_STATIC_JSON = register(
    Fact(
        "amd_smi_static_json",
        "amd-smi static --json",
        parse_amd_smi_static_json,
        gpu_tool=True,
        chained=True,
    )
)
AMD_SMI_STATIC = register(
    Fact("amd_smi_static", "amd-smi static", parse_amd_smi_static_text, gpu_tool=True, chained=True)
)
ROCM_SMI = register(Fact("rocm_smi", _ROCM_SMI, parse_rocm_smi_info, gpu_tool=True, chained=True))
ROCMINFO = register(Fact("rocminfo", "rocminfo", parse_rocminfo, gpu_tool=True, chained=True))
GPU_SOURCES = (AMD_SMI_STATIC_JSON, AMD_SMI_STATIC, ROCM_SMI, ROCMINFO)
"""The GPU tools' facts in order of preference."""
