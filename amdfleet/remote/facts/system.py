"""System facts: host name, OS, kernel, CPU, memory, disk space, the probing user."""

from __future__ import annotations

import re
import shlex

from amdfleet.remote.facts.registry import Fact, register
from amdfleet.remote.facts.values import as_int


def parse_line(text: str) -> str:
    """First non-empty line, stripped (``uname -n``, ``uname -r``, ``id -un``)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def parse_int(text: str) -> int | None:
    """A lone integer (``nproc``, ``id -u``, ``/proc/sys/kernel/numa_balancing``)."""
    return as_int(parse_line(text))


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
    numbers = [as_int(line) for line in text.splitlines()[1:]]
    return next((n for n in numbers if n is not None), None)


def parse_df_size(text: str) -> int | None:
    """Total size in bytes from ``df -B1 PATH`` (the ``1B-blocks`` column).

    Tolerates the filesystem name wrapping onto its own line.
    """
    tokens = " ".join(text.splitlines()[1:]).split()
    return as_int(tokens[1]) if len(tokens) > 1 else None


def parse_groups(text: str) -> tuple[str, ...]:
    """Group names from ``id -Gn``."""
    return tuple(parse_line(text).split())


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


# ------------------------------------------------------------------------- facts

_CPU_MODEL = "grep -m1 -i -E '^(model name|hardware|cpu model)[[:space:]]*:' /proc/cpuinfo"


def _disk_path_command(disk_path: str) -> str:
    return f"printf '%s\\n' {shlex.quote(disk_path)}"


def _disk_free_command(disk_path: str) -> str:
    """``df`` of the path's nearest existing ancestor (the path may not exist yet)."""
    quoted = shlex.quote(disk_path)
    return (
        f'p={quoted}; while [ ! -e "$p" ] && [ "$p" != / ] && [ "$p" != . ]; '
        'do p=$(dirname -- "$p"); done; df -B1 --output=avail -- "$p"'
    )


HOSTNAME = register(Fact("hostname", "uname -n", parse_line))
OS_RELEASE = register(Fact("os_release", "cat /etc/os-release", parse_os_release))
KERNEL = register(Fact("kernel", "uname -r", parse_line))
CPU_MODEL = register(Fact("cpu_model", _CPU_MODEL, parse_cpu_model))
CPU_COUNT = register(Fact("cpu_count", "nproc", parse_int))
CPU_FLAGS = register(
    Fact(
        "cpu_flags",
        "grep -m1 -i -E '^(flags|features)[[:space:]]*:' /proc/cpuinfo",
        parse_cpu_flags,
    )
)
MEMINFO = register(Fact("meminfo", "cat /proc/meminfo", parse_meminfo_total))
DISK_PATH = register(Fact("disk_path", _disk_path_command, parse_line))
DISK_FREE = register(Fact("disk_free", _disk_free_command, parse_df_avail))
USER = register(Fact("user", "id -un", parse_line))
UID = register(Fact("uid", "id -u", parse_int))
GROUPS = register(Fact("groups", "id -Gn", parse_groups))
NUMA_BALANCING = register(Fact("numa_balancing", "cat /proc/sys/kernel/numa_balancing", parse_int))
SHM = register(Fact("shm", "df -B1 /dev/shm", parse_df_size))
