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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from amdfleet.remote.facts import (
    GpuFacts,
    GpuInventory,
    HostFacts,
    identify,
    merge_gpus,
    parse_amd_smi_static_json,
    parse_amd_smi_static_text,
    parse_amd_smi_version,
    parse_amdgpu_module_version,
    parse_cpu_flags,
    parse_cpu_model,
    parse_default_route,
    parse_device_access,
    parse_df_avail,
    parse_df_size,
    parse_docker_version,
    parse_groups,
    parse_int,
    parse_ip_addr,
    parse_line,
    parse_ls,
    parse_meminfo_total,
    parse_os_release,
    parse_rdma_link,
    parse_rocm_smi_info,
    parse_rocm_version_file,
    parse_rocminfo,
)

BEGIN_MARKER = "<<<amdfleet-probe begin {name}>>>"
END_MARKER = "<<<amdfleet-probe end {name} rc={rc}>>>"
_BEGIN_RE = re.compile(r"<<<amdfleet-probe begin (\w+)>>>")
_END_RE = re.compile(r"<<<amdfleet-probe end (\w+) rc=(\d+)>>>")
DEFAULT_TIMEOUT_S = 10
GPU_TOOL_TIMEOUT_S = 60
_KILL_GRACE_S = 5  # the script's `timeout -k 5`: SIGKILL 5 s after SIGTERM
_GPU_PROBES = 4  # amd-smi JSON, amd-smi text, rocm-smi, rocminfo

_KFD_ACCESS = (
    "if [ ! -e /dev/kfd ]; then echo absent; "
    "elif [ -r /dev/kfd ] && [ -w /dev/kfd ]; then echo rw; else echo denied; fi"
)
_DRI_ACCESS = (
    'set -- /dev/dri/renderD*; [ -e "$1" ] || { echo absent; exit 0; }; '
    'for node in "$@"; do { [ -r "$node" ] && [ -w "$node" ]; } || { echo denied; exit 0; }; '
    "done; echo rw"
)
_CPU_MODEL = "grep -m1 -i -E '^(model name|hardware|cpu model)[[:space:]]*:' /proc/cpuinfo"
_ROCM_SMI = "rocm-smi --showproductname --showid --showbus --showdriverversion --showmeminfo vram"

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
    lines += [_probe_line(name, timeout_s, cmd) for name, cmd in _system_probes(disk_path)]
    lines += _gpu_probe_lines(timeout_s, gpu_timeout_s)
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def probe_time_limit(
    *, timeout_s: int = DEFAULT_TIMEOUT_S, gpu_timeout_s: int = GPU_TOOL_TIMEOUT_S
) -> int:
    """Upper bound in seconds on the whole script's run time, for the caller's timeout.

    Every probe may use its full timeout plus the 5 s ``timeout -k`` grace.
    """
    short = len(_system_probes("/")) + 1  # + amd_smi_version
    return short * (timeout_s + _KILL_GRACE_S) + _GPU_PROBES * (gpu_timeout_s + _KILL_GRACE_S)


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


def _system_probes(disk_path: str) -> list[tuple[str, str]]:
    quoted = shlex.quote(disk_path)
    nearest = (
        f'p={quoted}; while [ ! -e "$p" ] && [ "$p" != / ] && [ "$p" != . ]; '
        'do p=$(dirname -- "$p"); done; df -B1 --output=avail -- "$p"'
    )
    return [
        ("hostname", "uname -n"),
        ("os_release", "cat /etc/os-release"),
        ("kernel", "uname -r"),
        ("cpu_model", _CPU_MODEL),
        ("cpu_count", "nproc"),
        ("cpu_flags", "grep -m1 -i -E '^(flags|features)[[:space:]]*:' /proc/cpuinfo"),
        ("meminfo", "cat /proc/meminfo"),
        ("disk_path", f"printf '%s\\n' {quoted}"),
        ("disk_free", nearest),
        ("user", "id -un"),
        ("uid", "id -u"),
        ("groups", "id -Gn"),
        ("numa_balancing", "cat /proc/sys/kernel/numa_balancing"),
        ("shm", "df -B1 /dev/shm"),
        ("ip_addr", "ip -j addr"),
        ("default_route", "ip -j route show default"),
        ("rdma_link", "rdma -j link"),
        ("docker_version", "docker version --format '{{.Server.Version}}'"),
        ("kfd", _KFD_ACCESS),
        ("dri_nodes", "ls /dev/dri"),
        ("dri_access", _DRI_ACCESS),
        ("amdgpu_module", "cat /sys/module/amdgpu/version"),
        ("rocm_version_file", "cat /opt/rocm/.info/version"),
    ]


def _gpu_probe_lines(timeout_s: int, gpu_timeout_s: int) -> list[str]:
    """amd-smi JSON; its text form only if JSON failed; rocm-smi only if both failed."""
    return [
        _probe_line("amd_smi_version", timeout_s, "amd-smi version"),
        _probe_line("amd_smi_static_json", gpu_timeout_s, "amd-smi static --json"),
        "amdfleet_smi_rc=$amdfleet_rc",
        'if [ "$amdfleet_smi_rc" -ne 0 ]; then',
        "    " + _probe_line("amd_smi_static", gpu_timeout_s, "amd-smi static"),
        "    amdfleet_smi_rc=$amdfleet_rc",
        "fi",
        'if [ "$amdfleet_smi_rc" -ne 0 ]; then',
        "    " + _probe_line("rocm_smi", gpu_timeout_s, _ROCM_SMI),
        "fi",
        _probe_line("rocminfo", gpu_timeout_s, "rocminfo"),
    ]


def _probe_line(name: str, timeout_s: int, command: str) -> str:
    return f"amdfleet_probe {name} {int(timeout_s)} {shlex.quote(command)}"


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

_GPU_SOURCES: tuple[tuple[str, Callable[[str], GpuInventory]], ...] = (
    ("amd_smi_static_json", parse_amd_smi_static_json),
    ("amd_smi_static", parse_amd_smi_static_text),
    ("rocm_smi", parse_rocm_smi_info),
    ("rocminfo", parse_rocminfo),
)


def _host_facts(sections: Mapping[str, ProbeSection]) -> HostFacts:
    def out(name: str) -> str:
        section = sections.get(name)
        return section.output if section is not None else ""

    inventories = [parse(out(name)) for name, parse in _GPU_SOURCES]
    kfd_present, kfd_accessible = parse_device_access(out("kfd"))
    return HostFacts(
        hostname=parse_line(out("hostname")),
        os_name=parse_os_release(out("os_release")),
        kernel=parse_line(out("kernel")),
        cpu_model=parse_cpu_model(out("cpu_model")),
        cpu_count=parse_int(out("cpu_count")),
        cpu_flags=parse_cpu_flags(out("cpu_flags")),
        ram_bytes=parse_meminfo_total(out("meminfo")),
        disk_path=parse_line(out("disk_path")),
        disk_free_bytes=parse_df_avail(out("disk_free")),
        gpus=_gpus(inventories),
        rocm_version=_rocm_version(out("rocm_version_file"), out("amd_smi_version")),
        amdgpu_version=_driver_version(out("amdgpu_module"), out("amd_smi_version"), inventories),
        docker_version=_docker_version(sections.get("docker_version")),
        kfd_present=kfd_present,
        kfd_accessible=kfd_accessible,
        dri_nodes=parse_ls(out("dri_nodes")),
        dri_accessible=parse_device_access(out("dri_access"))[1],
        user=parse_line(out("user")),
        uid=parse_int(out("uid")),
        groups=parse_groups(out("groups")),
        shm_bytes=parse_df_size(out("shm")),
        numa_balancing=parse_int(out("numa_balancing")),
        interfaces=parse_ip_addr(out("ip_addr")),
        rdma_devices=tuple(link.name for link in parse_rdma_link(out("rdma_link"))),
        default_route_nic=parse_default_route(out("default_route")),
    )


def _gpus(inventories: list[GpuInventory]) -> tuple[GpuFacts, ...]:
    """The most preferred source that found GPUs, completed by the others."""
    found = [inventory.gpus for inventory in inventories if inventory.gpus]
    return identify(merge_gpus(found[0], *found[1:])) if found else ()


def _rocm_version(version_file: str, amd_smi_version: str) -> str | None:
    return parse_rocm_version_file(version_file) or parse_amd_smi_version(amd_smi_version).rocm


def _driver_version(
    module_version: str, amd_smi_version: str, inventories: list[GpuInventory]
) -> str | None:
    candidates = [
        parse_amdgpu_module_version(module_version),
        *(inventory.driver_version for inventory in inventories),
        parse_amd_smi_version(amd_smi_version).amdgpu,
    ]
    return next((version for version in candidates if version), None)


def _docker_version(section: ProbeSection | None) -> str | None:
    """Only a successful ``docker version`` counts: a client without daemon exits 1."""
    return parse_docker_version(section.output) if section and section.ok else None
