"""Fact collection: one read-only POSIX sh script, and the parser for what it prints.

:func:`build_probe_script` returns the script text; the ``ssh`` module runs it (``sh -s``
with the script on stdin, or ``sh -c SCRIPT``) and hands the combined stdout to
:func:`parse_probe_output`. Each probe runs under ``timeout(1)`` with stdin and stderr
detached, and prints between its own markers::

    <<<amdfleet-probe begin NAME>>>
    ...output...
    <<<amdfleet-probe end NAME rc=STATUS>>>

A missing tool (no amd-smi, no GPU on a CPU test box) only makes its section fail; the
script itself always exits 0. GPU sources are tried in order of preference: amd-smi
JSON, then amd-smi text if the JSON failed, then rocm-smi if amd-smi is unusable;
rocminfo always runs, to fill in compute units, VRAM and the gfx target.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from amdfleet.remote.facts import devices, docker, gpus, net, rocm, system
from amdfleet.remote.facts.records import GpuFacts, GpuInventory, HostFacts
from amdfleet.remote.facts.registry import FACTS, Fact

BEGIN_MARKER = "<<<amdfleet-probe begin {name}>>>"
END_MARKER = "<<<amdfleet-probe end {name} rc={rc}>>>"
_BEGIN_RE = re.compile(r"<<<amdfleet-probe begin (\w+)>>>")
_END_RE = re.compile(r"<<<amdfleet-probe end (\w+) rc=(\d+)>>>")
_T = TypeVar("_T")
DEFAULT_TIMEOUT_S = 10
GPU_TOOL_TIMEOUT_S = 60
_KILL_GRACE_S = 5  # the script's `timeout -k 5`: SIGKILL 5 s after SIGTERM


_PREAMBLE = """\
#!/bin/sh
# amdfleet host probe: read-only. Every probe is bounded by timeout(1); the script
# always exits 0 and reports each probe's own exit status in its end marker.
PATH="${PATH:+$PATH:}/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/opt/rocm/bin"
LC_ALL=C
export PATH LC_ALL
if command -v timeout >/dev/null 2>&1; then
    amdfleet_run() { timeout -k 5 "$@"; }
else
    amdfleet_run() { shift; "$@"; }
fi
amdfleet_probe() {
    printf '%s\\n' "<<<amdfleet-probe begin $1>>>"
    amdfleet_run "$2" sh -c "$3" </dev/null 2>/dev/null
    amdfleet_rc=$?
    printf '\\n%s\\n' "<<<amdfleet-probe end $1 rc=$amdfleet_rc>>>"
}
"""


@dataclass(frozen=True)
class ProbeSection:
    """One probe's output; ``exit_code`` is None when its end marker never arrived."""

    name: str
    output: str
    exit_code: int | None

    @property
    def ok(self) -> bool:
        """Whether the probe ran to completion and exited 0."""
        return self.exit_code == 0


def build_probe_script(
    disk_path: str,
    *,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    gpu_timeout_s: int = GPU_TOOL_TIMEOUT_S,
) -> str:
    """The probe script; free space is measured where ``disk_path`` is (or would be).

    ``disk_path`` should be absolute; it is shell-quoted, so ``~`` is not expanded.
    ``gpu_timeout_s`` bounds amd-smi, rocm-smi and rocminfo, which can hang on a
    wedged driver; ``timeout_s`` bounds every other probe.
    """
    lines = [_PREAMBLE.rstrip("\n")]
    lines += [_probe_line(fact, disk_path, timeout_s) for fact in _unchained()]
    lines += _gpu_probe_lines(timeout_s, gpu_timeout_s)
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def probe_time_limit(
    *, timeout_s: int = DEFAULT_TIMEOUT_S, gpu_timeout_s: int = GPU_TOOL_TIMEOUT_S
) -> int:
    """Upper bound in seconds on the whole script's run time, for the caller's timeout.

    Every probe may use its full timeout plus the 5 s ``timeout -k`` grace.
    """
    gpu_tools = sum(fact.gpu_tool for fact in FACTS.values())
    short = len(FACTS) - gpu_tools
    return short * (timeout_s + _KILL_GRACE_S) + gpu_tools * (gpu_timeout_s + _KILL_GRACE_S)


def format_section(name: str, output: str, exit_code: int = 0) -> str:
    """One section exactly as the script prints it (for fakes and tests)."""
    begin = BEGIN_MARKER.format(name=name)
    end = END_MARKER.format(name=name, rc=exit_code)
    return f"{begin}\n{output}\n{end}\n"


def split_sections(text: str) -> dict[str, ProbeSection]:
    """Split probe output into sections by name; text outside markers is ignored.

    A section whose end marker is missing (output cut off) keeps what it printed and
    has ``exit_code`` None.
    """
    sections: dict[str, ProbeSection] = {}
    name: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        begin, end = _begin_name(line), _end_status(line)
        if begin is not None:
            _close_open(sections, name, body)
            name, body = begin, []
        elif end is not None and name is not None and end[0] == name:
            sections[name] = ProbeSection(name, _body_text(body), end[1])
            name, body = None, []
        elif name is not None:
            body.append(line)
    _close_open(sections, name, body)
    return sections


def parse_probe_output(text: str) -> HostFacts:
    """Host facts from the combined output of :func:`build_probe_script`'s script.

    Never raises on missing or garbled sections (those facts are None/empty), except
    ``ValueError`` when the text holds no probe section at all: it is not probe output
    (the caller ran the wrong thing or the shell failed before the first probe).
    """
    sections = split_sections(text)
    if not sections:
        raise ValueError(
            "no amdfleet probe sections in the output; run the script from "
            "build_probe_script() with a POSIX sh and pass its complete stdout"
        )
    return _host_facts(sections)


# ------------------------------------------------------------------ script helpers


def _unchained() -> list[Fact[Any]]:
    """The facts probed one after the other, in registration order."""
    return [fact for fact in FACTS.values() if not fact.chained]


def _gpu_probe_lines(timeout_s: int, gpu_timeout_s: int) -> list[str]:
    """amd-smi JSON; its text form only if JSON failed; rocm-smi only if both failed."""

    def line(fact: Fact[Any]) -> str:
        return _probe_line(fact, "", gpu_timeout_s if fact.gpu_tool else timeout_s)

    return [
        line(rocm.AMD_SMI_VERSION),
        line(gpus.AMD_SMI_STATIC_JSON),
        "amdfleet_smi_rc=$amdfleet_rc",
        'if [ "$amdfleet_smi_rc" -ne 0 ]; then',
        "    " + line(gpus.AMD_SMI_STATIC),
        "    amdfleet_smi_rc=$amdfleet_rc",
        "fi",
        'if [ "$amdfleet_smi_rc" -ne 0 ]; then',
        "    " + line(gpus.ROCM_SMI),
        "fi",
        line(gpus.ROCMINFO),
    ]


def _probe_line(fact: Fact[Any], disk_path: str, timeout_s: int) -> str:
    command = fact.command_for(disk_path)
    return f"amdfleet_probe {fact.name} {int(timeout_s)} {shlex.quote(command)}"


# ------------------------------------------------------------------ split helpers


def _begin_name(line: str) -> str | None:
    match = _BEGIN_RE.fullmatch(line)
    return match.group(1) if match else None


def _end_status(line: str) -> tuple[str, int] | None:
    match = _END_RE.fullmatch(line)
    return (match.group(1), int(match.group(2))) if match else None


def _body_text(body: list[str]) -> str:
    """Rejoin a section; the script adds one newline before the end marker, drop it."""
    lines = body[:-1] if body and body[-1] == "" else body
    return "\n".join(lines) + ("\n" if lines else "")


def _close_open(sections: dict[str, ProbeSection], name: str | None, body: list[str]) -> None:
    if name is not None and name not in sections:
        sections[name] = ProbeSection(name, "\n".join(body), None)


# ----------------------------------------------------------------- facts assembly


def _host_facts(sections: Mapping[str, ProbeSection]) -> HostFacts:
    def read(fact: Fact[_T]) -> _T:
        section = sections.get(fact.name)
        return fact.parse(section.output if section is not None else "")

    inventories = [read(source) for source in gpus.GPU_SOURCES]
    amd_smi = read(rocm.AMD_SMI_VERSION)
    kfd_present, kfd_accessible = read(devices.KFD)
    return HostFacts(
        hostname=read(system.HOSTNAME),
        os_name=read(system.OS_RELEASE),
        kernel=read(system.KERNEL),
        cpu_model=read(system.CPU_MODEL),
        cpu_count=read(system.CPU_COUNT),
        cpu_flags=read(system.CPU_FLAGS),
        ram_bytes=read(system.MEMINFO),
        disk_path=read(system.DISK_PATH),
        disk_free_bytes=read(system.DISK_FREE),
        gpus=_gpus(inventories),
        rocm_version=read(rocm.ROCM_VERSION_FILE) or amd_smi.rocm,
        amdgpu_version=_driver_version(read(rocm.AMDGPU_MODULE), amd_smi.amdgpu, inventories),
        docker_version=read(docker.DOCKER_VERSION) if _ok(sections, "docker_version") else None,
        kfd_present=kfd_present,
        kfd_accessible=kfd_accessible,
        dri_nodes=read(devices.DRI_NODES),
        dri_accessible=read(devices.DRI_ACCESS)[1],
        user=read(system.USER),
        uid=read(system.UID),
        groups=read(system.GROUPS),
        shm_bytes=read(system.SHM),
        numa_balancing=read(system.NUMA_BALANCING),
        interfaces=read(net.IP_ADDR),
        rdma_devices=tuple(link.name for link in read(net.RDMA_LINK)),
        default_route_nic=read(net.DEFAULT_ROUTE),
    )


def _gpus(inventories: list[GpuInventory]) -> tuple[GpuFacts, ...]:
    """The most preferred source that found GPUs, completed by the others."""
    found = [inventory.gpus for inventory in inventories if inventory.gpus]
    return gpus.identify(gpus.merge_gpus(found[0], *found[1:])) if found else ()


def _driver_version(
    module_version: str | None, amd_smi_amdgpu: str | None, inventories: list[GpuInventory]
) -> str | None:
    candidates = [
        module_version,
        *(inventory.driver_version for inventory in inventories),
        amd_smi_amdgpu,
    ]
    return next((version for version in candidates if version), None)


def _ok(sections: Mapping[str, ProbeSection], name: str) -> bool:
    """Whether a probe ran and exited 0 (a ``docker version`` without daemon exits 1)."""
    section = sections.get(name)
    return section is not None and section.ok
