"""ROCm and driver facts: the ROCm release and the amdgpu driver version, from the
files ROCm and the DKMS driver install and from ``amd-smi version``."""

from __future__ import annotations

from amdfleet.remote.facts.records import AmdSmiVersion
from amdfleet.remote.facts.registry import Fact, register
from amdfleet.remote.facts.system import parse_line
from amdfleet.remote.facts.values import as_text, clean_version, key_value, version_in


def parse_rocm_version_file(text: str) -> str | None:
    """ROCm release from ``/opt/rocm/.info/version`` (``6.4.0-47`` → ``6.4.0``)."""
    return version_in(parse_line(text))


def parse_amdgpu_module_version(text: str) -> str | None:
    """``/sys/module/amdgpu/version`` (present with the DKMS driver only)."""
    return version_in(parse_line(text))


def parse_amd_smi_version(text: str) -> AmdSmiVersion:
    """Versions from ``amd-smi version`` (one ``Key: value | Key: value ...`` line).

    With the inbox (kernel) driver amd-smi prints the kernel banner as the amdgpu
    version; that is reported as None.
    """
    parts = dict(key_value(part) for part in parse_line(text).split("|"))
    return AmdSmiVersion(
        tool=as_text(parts.get("amdsmi tool")) or None,
        library=as_text(parts.get("amdsmi library version")) or None,
        rocm=version_in(parts.get("rocm version", "")),
        amdgpu=clean_version(parts.get("amdgpu version", "")),
    )


# ------------------------------------------------------------------------- facts

AMDGPU_MODULE = register(
    Fact("amdgpu_module", "cat /sys/module/amdgpu/version", parse_amdgpu_module_version)
)
ROCM_VERSION_FILE = register(
    Fact("rocm_version_file", "cat /opt/rocm/.info/version", parse_rocm_version_file)
)
AMD_SMI_VERSION = register(
    Fact("amd_smi_version", "amd-smi version", parse_amd_smi_version, chained=True)
)
"""Runs first in the probe's GPU chain, bounded by the short timeout."""
