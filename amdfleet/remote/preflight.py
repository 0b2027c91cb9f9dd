"""Preflight: pure checks of collected :class:`HostFacts` against what a stack needs.

:func:`check_host` returns one :class:`~amdfleet.findings.Finding` about the host per
applicable check, passing or not, so a caller can show the whole table;
:func:`raise_for_failures` turns the failed ones of every host into a single
:class:`~amdfleet.errors.PreflightError`, each with a concrete command or action that
fixes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from amdfleet.catalog.gpus import Accelerator
from amdfleet.errors import PreflightError
from amdfleet.findings import Finding
from amdfleet.remote.facts.gpus import GIB, match_accelerator, vram_matches
from amdfleet.remote.facts.records import GpuFacts, HostFacts
from amdfleet.remote.requirement import HostRequirement

REQUIRED_GROUPS = ("video", "render")

UNVERIFIED_DEVICE_IDS = frozenset({"mi355x"})
"""Accelerators whose catalog device id was never seen on real hardware: a GPU with an
unknown id is accepted for them if its gfx target and VRAM fit."""


def check_host(host: str, facts: HostFacts, requirement: HostRequirement) -> list[Finding]:
    """Run every check that applies to ``requirement`` on ``facts`` of ``host`` (the
    findings' subject); no I/O."""
    checks = _GPU_CHECKS if requirement.needs_gpus else ()
    results = (check(host, facts, requirement) for check in (*checks, *_HOST_CHECKS))
    return [result for result in results if result is not None]


def raise_for_failures(findings: Iterable[Finding]) -> None:
    """Raise :class:`PreflightError` listing every failed check of every host, if any."""
    failures = [finding for finding in findings if not finding.ok]
    if failures:
        raise PreflightError(failures)


# ------------------------------------------------------------------- GPU checks


def _check_gpu_count(host: str, facts: HostFacts, req: HostRequirement) -> Finding:
    found, need = len(facts.gpus), req.gpu_count
    detail = f"found {found} GPU(s), need {need}"
    if found >= need:
        return Finding(host, "gpu_count", True, detail)
    if found == 0:
        hint = (
            "no AMD GPU was detected: install ROCm and the amdgpu driver "
            "(amdgpu-dkms), reboot, and check that `amd-smi list` shows the GPUs"
        )
    else:
        hint = f"use a host with at least {need} GPUs or lower the stack's parallelism"
    return Finding(host, "gpu_count", False, detail, hint)


def _check_gpu_model(host: str, facts: HostFacts, req: HostRequirement) -> Finding | None:
    if not facts.gpus:
        return None  # gpu_count already reports it
    expected = req.expected
    wrong = [gpu for gpu in facts.gpus if not _is_expected(gpu, expected)]
    if not wrong:
        return Finding(host, "gpu_model", True, f"all {len(facts.gpus)} GPU(s) are {expected.id}")
    described = "; ".join(_describe(wrong))
    ids = ", ".join(f"0x{device:04x}" for device in expected.device_ids)
    hint = (
        f"this stack needs {expected.name} ({expected.arch}, device id {ids}): "
        "run it on such a host or change the stack's accelerator"
    )
    return Finding(host, "gpu_model", False, f"expected {expected.id}, found {described}", hint)


def _check_kfd(host: str, facts: HostFacts, req: HostRequirement) -> Finding:
    if facts.kfd_accessible:
        return Finding(host, "kfd", True, "/dev/kfd is readable and writable")
    if not facts.kfd_present:
        return Finding(host, "kfd", False, "/dev/kfd does not exist", _LOAD_DRIVER_HINT)
    return Finding(
        host, "kfd", False, "/dev/kfd is not read-write for the user", _groups_hint(facts)
    )


def _check_dri(host: str, facts: HostFacts, req: HostRequirement) -> Finding:
    if facts.dri_accessible:
        return Finding(host, "dri", True, "/dev/dri render nodes are readable and writable")
    if not any(node.startswith("renderD") for node in facts.dri_nodes):
        return Finding(host, "dri", False, "no render node under /dev/dri", _LOAD_DRIVER_HINT)
    detail = "/dev/dri render nodes are not read-write for the user"
    return Finding(host, "dri", False, detail, _groups_hint(facts))


def _check_groups(host: str, facts: HostFacts, req: HostRequirement) -> Finding:
    if facts.is_root:
        return Finding(host, "groups", True, "running as root")
    missing = [group for group in REQUIRED_GROUPS if group not in facts.groups]
    if not missing:
        return Finding(host, "groups", True, f"user is in {', '.join(REQUIRED_GROUPS)}")
    detail = f"user {facts.user or '?'} is not in group(s) {', '.join(missing)}"
    return Finding(host, "groups", False, detail, _groups_hint(facts))


# ------------------------------------------------------------------ host checks


def _check_shm(host: str, facts: HostFacts, req: HostRequirement) -> Finding | None:
    if req.min_shm_bytes == 0:
        return None
    size = math.ceil(req.min_shm_bytes / GIB)
    if facts.shm_bytes is None:
        hint = f"sudo mount -t tmpfs -o size={size}G tmpfs /dev/shm (and add it to /etc/fstab)"
        return Finding(host, "shm", False, "could not read the size of /dev/shm", hint)
    hint = f"sudo mount -o remount,size={size}G /dev/shm (persist it in /etc/fstab)"
    detail = f"/dev/shm is {_gib(facts.shm_bytes)}, need {_gib(req.min_shm_bytes)}"
    return _result(host, "shm", facts.shm_bytes >= req.min_shm_bytes, detail, hint)


def _check_numa_balancing(host: str, facts: HostFacts, req: HostRequirement) -> Finding | None:
    if not req.numa_balancing_off:
        return None
    if facts.numa_balancing is None:
        return Finding(host, "numa_balancing", True, "kernel has no NUMA auto-balancing")
    if facts.numa_balancing == 0:
        return Finding(host, "numa_balancing", True, "NUMA auto-balancing is off")
    hint = (
        "sudo sh -c 'echo 0 > /proc/sys/kernel/numa_balancing' (persist it: "
        "echo kernel.numa_balancing=0 | sudo tee /etc/sysctl.d/90-amdfleet.conf)"
    )
    detail = f"NUMA auto-balancing is on (kernel.numa_balancing={facts.numa_balancing})"
    return Finding(host, "numa_balancing", False, detail, hint)


def _check_disk(host: str, facts: HostFacts, req: HostRequirement) -> Finding | None:
    if not req.weights_dir:
        return None
    if facts.disk_path != req.weights_dir:
        detail = f"free space was measured at {facts.disk_path or '(nothing)'}"
        hint = f"collect facts with build_probe_script({req.weights_dir!r})"
        return Finding(host, "disk", False, f"{detail}, not at {req.weights_dir}", hint)
    if facts.disk_free_bytes is None:
        detail = f"could not read the free space at {req.weights_dir}"
        return Finding(host, "disk", False, detail, "check that `df` works on the host")
    free, need = facts.disk_free_bytes, req.weights_bytes
    detail = f"{_gib(free)} free at {req.weights_dir}, weights need {_gib(need)}"
    hint = f"free {_gib(need - free)} on that filesystem or point weights_dir at a larger disk"
    return _result(host, "disk", free >= need, detail, hint)


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags with which vLLM's CPU build computes bfloat16 natively."""


def _check_cpu_dtype(host: str, facts: HostFacts, req: HostRequirement) -> Finding | None:
    """A CPU engine in bfloat16 needs native bfloat16: measured on a CPU without
    AVX-512, vLLM's CPU build answered in repeated nonsense at 0.5 tokens/s in bfloat16
    where float32 answered correctly (transformers stayed correct in bfloat16, so the
    fault is the engine's bfloat16 path)."""
    if req.needs_gpus or req.cpu_dtype is None:
        return None
    if req.cpu_dtype != "bfloat16":
        return _result(host, "cpu_dtype", True, f"{req.cpu_dtype} (every CPU computes it)", "")
    if facts.cpu_flags is None:
        detail = "bfloat16; the host reported no CPU flags to judge it by"
        return _result(host, "cpu_dtype", True, detail, "")
    native = [flag for flag in BF16_CPU_FLAGS if flag in facts.cpu_flags]
    detail = (
        f"bfloat16 with {', '.join(native)}"
        if native
        else "bfloat16 on a CPU without " + " or ".join(BF16_CPU_FLAGS) + ": vLLM's CPU "
        "build computes wrong tokens there, slowly"
    )
    hint = "set serving.dtype: float32 (or auto, which is float32 on CPUs)"
    return _result(host, "cpu_dtype", bool(native), detail, hint)


def _check_docker(host: str, facts: HostFacts, req: HostRequirement) -> Finding | None:
    if req.runtime != "docker":
        return None
    if facts.docker_version:
        return Finding(host, "docker", True, f"Docker Engine {facts.docker_version}")
    hint = (
        "install Docker Engine (sudo apt-get install docker.io) and start it "
        "(sudo systemctl enable --now docker); if it runs, give the user the socket: "
        f"sudo usermod -aG docker {facts.user or '$USER'} (then log in again)"
    )
    return Finding(host, "docker", False, "the Docker daemon is not reachable", hint)


# ------------------------------------------------------------------------ helpers

_LOAD_DRIVER_HINT = (
    "load the amdgpu driver: sudo modprobe amdgpu (install amdgpu-dkms from the "
    "ROCm repository if the module is missing), then check dmesg for amdgpu errors"
)

_Check = Callable[[str, HostFacts, HostRequirement], Finding | None]
_GPU_CHECKS: tuple[_Check, ...] = (
    _check_gpu_count,
    _check_gpu_model,
    _check_kfd,
    _check_dri,
    _check_groups,
)
_HOST_CHECKS: tuple[_Check, ...] = (
    _check_shm,
    _check_numa_balancing,
    _check_disk,
    _check_docker,
    _check_cpu_dtype,
)


def _result(host: str, name: str, ok: bool, detail: str, hint: str) -> Finding:
    return Finding(host, name, ok, detail, "" if ok else hint)


def _is_expected(gpu: GpuFacts, expected: Accelerator) -> bool:
    found = gpu.accelerator or match_accelerator(gpu)
    if found is not None:
        return found == expected.id
    if expected.id not in UNVERIFIED_DEVICE_IDS:
        return False
    return gpu.arch == expected.arch and vram_matches(gpu.vram_bytes, expected.memory_gib)


def _describe(gpus: Sequence[GpuFacts]) -> list[str]:
    """``GPU 0,1: mi325x (device 0x74a5, gfx942, 256.0 GiB)``, alike GPUs grouped."""
    groups: dict[str, list[str]] = {}
    for gpu in gpus:
        groups.setdefault(_identity(gpu), []).append(str(gpu.index))
    return [f"GPU {','.join(indices)}: {identity}" for identity, indices in groups.items()]


def _identity(gpu: GpuFacts) -> str:
    parts = [
        f"device 0x{gpu.device_id:04x}" if gpu.device_id is not None else "device ?",
        gpu.arch or "arch ?",
        _gib(gpu.vram_bytes) if gpu.vram_bytes is not None else "VRAM ?",
    ]
    known = gpu.accelerator or match_accelerator(gpu) or "unknown"
    return f"{known} ({', '.join(parts)})"


def _groups_hint(facts: HostFacts) -> str:
    user = facts.user or "$USER"
    return f"sudo usermod -aG {','.join(REQUIRED_GROUPS)} {user} (then log in again)"


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"
