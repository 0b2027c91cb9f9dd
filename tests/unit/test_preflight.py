"""Preflight checks: passing and failing hosts, every failure reported with a hint."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from amdfleet.errors import PreflightError
from amdfleet.findings import Finding
from amdfleet.remote.facts.gpus import identify
from amdfleet.remote.facts.records import GpuFacts, HostFacts
from amdfleet.remote.preflight import check_host, raise_for_failures
from amdfleet.remote.requirement import HostRequirement

MIB = 1024**2
GIB = 1024**3


def gpus(count: int, start: int = 0, **fields: Any) -> tuple[GpuFacts, ...]:
    indices = range(start, start + count)
    return identify(GpuFacts(i, bdf=f"0000:{0x10 * (i + 1):02x}:00.0", **fields) for i in indices)


MI300X = {"device_id": 0x74A1, "arch": "gfx942", "vram_bytes": 196592 * MIB}
MI325X = {"device_id": 0x74A5, "arch": "gfx942", "vram_bytes": 262128 * MIB}
MI350X = {"device_id": 0x75A0, "arch": "gfx950", "vram_bytes": 288 * GIB}

GOOD_HOST = HostFacts(
    hostname="mi300x-01",
    disk_path="/data/models",
    disk_free_bytes=2048 * GIB,
    gpus=gpus(8, **MI300X),
    docker_version="27.5.1",
    kfd_present=True,
    kfd_accessible=True,
    dri_nodes=("card1", "renderD128"),
    dri_accessible=True,
    user="amd",
    uid=1000,
    groups=("amd", "video", "render", "docker"),
    shm_bytes=64 * GIB,
    numa_balancing=0,
)

NEED = HostRequirement(
    accelerator="mi300x",
    gpu_count=8,
    runtime="docker",
    min_shm_bytes=16 * GIB,
    weights_dir="/data/models",
    weights_bytes=700 * GIB,
)

ALL_GPU_CHECKS = ["gpu_count", "gpu_model", "kfd", "dri", "groups"]
ALL_HOST_CHECKS = ["shm", "numa_balancing", "disk", "docker"]


def failed(results: list[Finding]) -> dict[str, str]:
    return {r.check: r.hint for r in results if not r.ok}


def test_good_host_passes_every_check() -> None:
    results = check_host("ci", GOOD_HOST, NEED)
    assert [r.check for r in results] == ALL_GPU_CHECKS + ALL_HOST_CHECKS
    assert failed(results) == {}
    assert all(r.hint == "" and r.detail for r in results)


@pytest.mark.parametrize(
    ("host_changes", "need_changes", "expected"),
    [
        pytest.param({"gpus": gpus(4, **MI300X)}, {}, {"gpu_count": "at least 8 GPUs"}, id="few"),
        pytest.param({"gpus": ()}, {}, {"gpu_count": "install ROCm"}, id="no-gpus"),
        pytest.param(
            {"gpus": gpus(8, **MI325X)}, {}, {"gpu_model": "AMD Instinct MI300X"}, id="mi325x"
        ),
        pytest.param(
            {"gpus": gpus(7, **MI300X) + gpus(1, 7, **MI325X)},
            {},
            {"gpu_model": "0x74a1"},
            id="mixed",
        ),
        pytest.param(
            {"kfd_present": False, "kfd_accessible": False},
            {},
            {"kfd": "sudo modprobe amdgpu"},
            id="no-kfd",
        ),
        pytest.param(
            {"kfd_accessible": False},
            {},
            {"kfd": "sudo usermod -aG video,render amd"},
            id="kfd-perm",
        ),
        pytest.param(
            {"dri_nodes": (), "dri_accessible": False}, {}, {"dri": "modprobe amdgpu"}, id="no-dri"
        ),
        pytest.param(
            {"dri_accessible": False}, {}, {"dri": "usermod -aG video,render"}, id="dri-perm"
        ),
        pytest.param(
            {"groups": ("amd", "video")},
            {},
            {"groups": "sudo usermod -aG video,render amd"},
            id="grp",
        ),
        pytest.param({"groups": (), "uid": 0, "user": "root"}, {}, {}, id="root-needs-no-groups"),
        pytest.param(
            {"shm_bytes": 8 * GIB}, {}, {"shm": "mount -o remount,size=16G /dev/shm"}, id="shm"
        ),
        pytest.param({"shm_bytes": None}, {}, {"shm": "size=16G"}, id="shm-unknown"),
        pytest.param({"shm_bytes": 8 * GIB}, {"min_shm_bytes": 0}, {}, id="shm-not-required"),
        pytest.param(
            {"numa_balancing": 1},
            {},
            {"numa_balancing": "sudo sh -c 'echo 0 > /proc/sys/kernel/numa_balancing'"},
            id="numa",
        ),
        pytest.param({"numa_balancing": None}, {}, {}, id="kernel-without-numa-balancing"),
        pytest.param({"numa_balancing": 1}, {"numa_balancing_off": False}, {}, id="numa-allowed"),
        pytest.param(
            {"disk_free_bytes": 500 * GIB}, {}, {"disk": "free 200.0 GiB"}, id="disk-full"
        ),
        pytest.param(
            {"disk_path": "/tmp"}, {}, {"disk": "build_probe_script"}, id="disk-elsewhere"
        ),
        pytest.param(
            {"docker_version": None}, {}, {"docker": "apt-get install docker.io"}, id="docker"
        ),
        pytest.param({"docker_version": None}, {"runtime": "process"}, {}, id="process-runtime"),
    ],
)
def test_check_host(
    host_changes: dict[str, Any], need_changes: dict[str, Any], expected: dict[str, str]
) -> None:
    results = check_host("ci", replace(GOOD_HOST, **host_changes), replace(NEED, **need_changes))
    failures = failed(results)
    assert set(failures) == set(expected)
    for name, hint_part in expected.items():
        assert hint_part in failures[name]


def test_unusable_host_reports_every_problem_at_once() -> None:
    bare = HostFacts(hostname="bare", user="amd", uid=1000, numa_balancing=1)
    assert set(failed(check_host("ci", bare, NEED))) == {
        "gpu_count",
        "kfd",
        "dri",
        "groups",
        "shm",
        "numa_balancing",
        "disk",
        "docker",
    }


@pytest.mark.parametrize(
    ("gpu", "accelerator", "ok"),
    [
        pytest.param({"device_id": 0x75A3, "arch": "gfx950"}, "mi355x", True, id="catalog-id"),
        pytest.param(
            {"device_id": 0x75B3, "arch": "gfx950", "vram_bytes": 288 * GIB},
            "mi355x",
            True,
            id="unverified-id-gfx950-288GiB",
        ),
        pytest.param({"arch": "gfx950", "vram_bytes": 288 * GIB}, "mi355x", True, id="no-id"),
        pytest.param(
            {"device_id": 0x75B3, "arch": "gfx950", "vram_bytes": 192 * GIB},
            "mi355x",
            False,
            id="gfx950-wrong-vram",
        ),
        pytest.param({"device_id": 0x75B3, "arch": "gfx950"}, "mi355x", False, id="vram-unknown"),
        pytest.param(MI350X, "mi355x", False, id="known-mi350x-is-not-mi355x"),
        pytest.param(
            {"device_id": 0x75B3, "arch": "gfx950", "vram_bytes": 288 * GIB},
            "mi350x",
            False,
            id="fallback-only-for-unverified-ids",
        ),
        pytest.param(MI350X, "mi350x", True, id="mi350x"),
        pytest.param({"device_id": 0x74B5, "arch": "gfx942"}, "mi300x", True, id="mi300x-vf"),
        pytest.param({"device_id": 0x74B9, "subsystem_id": 0x74A5}, "mi325x", True, id="mi325x-vf"),
        pytest.param({"device_id": 0x74A0, "arch": "gfx942"}, "mi300x", False, id="mi300a"),
    ],
)
def test_gpu_model(gpu: dict[str, Any], accelerator: str, ok: bool) -> None:
    host = replace(GOOD_HOST, gpus=gpus(8, **gpu))
    need = replace(NEED, accelerator=accelerator)
    results = {r.check: r for r in check_host("ci", host, need)}
    assert results["gpu_model"].ok is ok


def test_cpu_stack_needs_no_gpu_devices_or_groups() -> None:
    box = HostFacts(
        hostname="ci",
        disk_path="/tmp/models",
        disk_free_bytes=80 * GIB,
        user="runner",
        uid=1001,
        groups=("runner",),
        shm_bytes=8 * GIB,
        numa_balancing=1,
    )
    need = HostRequirement(
        accelerator="cpu",
        gpu_count=0,
        runtime="process",
        min_shm_bytes=1 * GIB,
        weights_dir="/tmp/models",
        weights_bytes=1 * GIB,
        numa_balancing_off=False,
    )
    results = check_host("ci", box, need)
    assert [r.check for r in results] == ["shm", "disk"]
    assert failed(results) == {}


CPU_BOX = HostFacts(
    hostname="ci", disk_path="/tmp/models", disk_free_bytes=80 * GIB, uid=0, shm_bytes=8 * GIB
)


@pytest.mark.parametrize(
    ("dtype", "flags", "ok"),
    [
        ("bfloat16", ("avx2",), False),  # Zen 3: no native bfloat16
        ("bfloat16", ("avx2", "avx512f", "avx512_bf16"), True),
        ("bfloat16", ("avx2", "avx512f", "amx_bf16"), True),
        ("float32", ("avx2",), True),
        ("bfloat16", None, True),  # no flags reported: nothing to judge by
    ],
)
def test_cpu_dtype_needs_native_bfloat16(
    dtype: str, flags: tuple[str, ...] | None, ok: bool
) -> None:
    need = HostRequirement(
        accelerator="cpu", gpu_count=0, runtime="process", numa_balancing_off=False,
        cpu_dtype=dtype,
    )  # fmt: skip
    results = {r.check: r for r in check_host("ci", replace(CPU_BOX, cpu_flags=flags), need)}
    assert results["cpu_dtype"].ok is ok
    if not ok:
        assert "avx512_bf16 or amx_bf16" in results["cpu_dtype"].detail
        assert "serving.dtype: float32" in results["cpu_dtype"].hint
        with pytest.raises(PreflightError, match="cpu_dtype: bfloat16 on a CPU without"):
            raise_for_failures(results.values())


def test_no_dtype_in_the_requirement_no_cpu_dtype_check() -> None:
    need = HostRequirement(accelerator="cpu", gpu_count=0, runtime="process")
    assert "cpu_dtype" not in {r.check for r in check_host("ci", CPU_BOX, need)}


def test_raise_for_failures_lists_all_hosts_and_hints() -> None:
    results = [
        *check_host("node-0", GOOD_HOST, NEED),
        *check_host("node-1", replace(GOOD_HOST, numa_balancing=1, docker_version=None), NEED),
        *check_host("node-2", replace(GOOD_HOST, groups=("amd",), shm_bytes=GIB), NEED),
    ]
    with pytest.raises(PreflightError) as raised:
        raise_for_failures(results)
    error = raised.value
    assert [(failure.subject, failure.check) for failure in error.failures] == [
        ("node-1", "numa_balancing"),
        ("node-1", "docker"),
        ("node-2", "groups"),
        ("node-2", "shm"),
    ]
    message = str(error)
    for failure in error.failures:
        assert f"[{failure.subject}] {failure.check}: {failure.detail}" in message
        assert failure.hint and failure.hint in message
    assert "node-0" not in message


def test_raise_for_failures_is_silent_when_all_pass() -> None:
    raise_for_failures(check_host("node-0", GOOD_HOST, NEED))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"accelerator": "mi999x"}, r"unknown accelerator 'mi999x' \(known: .*mi300x, mi325x"),
        ({"gpu_count": -1}, "gpu_count, min_shm_bytes and weights_bytes must be >= 0"),
        ({"weights_bytes": -5}, "gpu_count, min_shm_bytes and weights_bytes must be >= 0"),
    ],
)
def test_requirement_rejects_nonsense(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(NEED, **fields)


def test_gpu_model_detail_groups_alike_gpus() -> None:
    host = replace(GOOD_HOST, gpus=gpus(6, **MI300X) + gpus(2, 6, **MI325X))
    result = {r.check: r for r in check_host("ci", host, NEED)}["gpu_model"]
    assert result.detail == (
        "expected mi300x, found GPU 6,7: mi325x (device 0x74a5, gfx942, 256.0 GiB)"
    )
