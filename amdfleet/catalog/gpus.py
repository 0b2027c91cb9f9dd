"""Accelerators amdfleet knows: memory, gfx target and PCI device ids.

Memory sizes are the usable VRAM the driver reports (``amd-smi static --vram``), in GiB.
Device ids are matched, not marketing names: names vary by ROCm release and by
virtualisation ("MI300X-O", "AMD Instinct MI300X VF", "Mi325X VF"), ids and gfx targets
do not. Virtual functions report their own device id and the physical part's id as
``SUBSYSTEM_ID``; both are listed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    """One accelerator model."""

    id: str
    name: str
    arch: str
    memory_gib: float
    device_ids: tuple[int, ...]
    fp8: bool
    mxfp4: bool
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    a.id: a
    for a in (
        Accelerator(
            id="mi300x",
            name="AMD Instinct MI300X",
            arch="gfx942",
            memory_gib=192.0,
            device_ids=(0x74A1, 0x74B5),
            fp8=True,
            mxfp4=False,
            source="fixtures mi300x.amd-smi-static*.txt (DEVICE_ID 0x74a1, VRAM 196592 MB), "
            "mi300x-vf.rocm-smi-showproductname (VF 0x74b5)",
        ),
        Accelerator(
            id="mi325x",
            name="AMD Instinct MI325X",
            arch="gfx942",
            memory_gib=256.0,
            device_ids=(0x74A5, 0x74B9),
            fp8=True,
            mxfp4=False,
            source="fixture mi325x-vf.amd-smi-static-g0.txt (VF 0x74b9, SUBSYSTEM_ID 0x74a5)",
        ),
        Accelerator(
            id="mi350x",
            name="AMD Instinct MI350X",
            arch="gfx950",
            memory_gib=288.0,
            device_ids=(0x75A0,),
            fp8=True,
            mxfp4=True,
            source="fixture mi350x.amd-smi-static-partial.txt (DEVICE_ID 0x75a0, gfx950)",
        ),
        Accelerator(
            id="mi355x",
            name="AMD Instinct MI355X",
            arch="gfx950",
            memory_gib=288.0,
            device_ids=(0x75A3,),
            fp8=True,
            mxfp4=True,
            source="288 GB HBM3E, gfx950 (AMD product page). No captured MI355X amd-smi "
            "output exists in fixtures; 0x75a3 is the id reported for MI355X by the "
            "community and is unverified here, so preflight also matches gfx950 + VRAM",
        ),
        Accelerator(
            id="cpu",
            name="CPU (vLLM CPU backend, for the local stack and tests)",
            arch="cpu",
            memory_gib=4.0,
            device_ids=(),
            fp8=False,
            mxfp4=False,
            source="vLLM CPU backend; memory is the KV-cache budget VLLM_CPU_KVCACHE_SPACE "
            "plus weights, not a device size",
        ),
    )
}

GPU_ARCHS: tuple[str, ...] = ("gfx942", "gfx950")


def accelerator(accelerator_id: str) -> Accelerator:
    """Return the accelerator with this id; raises ``KeyError`` if unknown."""
    return ACCELERATORS[accelerator_id]


def accelerator_for_device(device_id: int, arch: str | None = None) -> Accelerator | None:
    """Find the accelerator a PCI device id belongs to, or ``None``.

    ``arch`` (a gfx target) disambiguates nothing today but guards against a future id
    reused across generations: a mismatch returns ``None``.
    """
    for acc in ACCELERATORS.values():
        if device_id in acc.device_ids and (arch is None or acc.arch == arch):
            return acc
    return None
