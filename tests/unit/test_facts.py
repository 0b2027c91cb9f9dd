"""Fact parsers fed by real captured outputs (../shared/fixtures/amd-hosts)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amdfleet import catalog
from amdfleet.remote.facts import devices, docker, gpus, net, rocm, system
from amdfleet.remote.facts.gpus import identify, match_accelerator, merge_gpus
from amdfleet.remote.facts.records import (
    AmdSmiVersion,
    GpuFacts,
    GpuInventory,
    HostFacts,
    NetInterface,
    RdmaLink,
)

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "amd-hosts"
KIB = 1024
MIB = 1024**2
GIB = 1024**3


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def mi300x_by_id(index: int, bdf: str | None, name: str) -> GpuFacts:
    return GpuFacts(index, device_id=0x74A1, market_name=name, bdf=bdf, accelerator="mi300x")


MI300X_ROCMINFO = dict(
    device_id=0x74A1,
    arch="gfx942",
    market_name="AMD Instinct MI300X",
    vram_bytes=196592 * MIB,
    compute_units=304,
    accelerator="mi300x",
)

# (fixture, parser, GPUs after identify(), driver version)
GPU_CASES: list[tuple[str, Callable[[str], GpuInventory], list[GpuFacts], str | None]] = [
    (
        "mi300x.amd-smi-static.rocm6.2.txt",
        gpus.parse_amd_smi_static_text,
        [mi300x_by_id(0, "0000:05:00.0", "MI300X-O")],
        None,
    ),
    (
        "mi325x-vf.amd-smi-static-g0.txt",
        gpus.parse_amd_smi_static_text,
        [
            GpuFacts(
                0,
                device_id=0x74B9,
                subsystem_id=0x74A5,
                arch="gfx942",
                market_name="AMD Instinct Mi325X VF",
                bdf="0000:83:00.0",
                compute_units=304,
                accelerator="mi325x",
            )
        ],
        None,
    ),
    (
        "mi350x.amd-smi-static-partial.txt",
        gpus.parse_amd_smi_static_text,
        [
            GpuFacts(
                0,
                device_id=0x75A0,
                subsystem_id=0x75A0,
                arch="gfx950",
                market_name="AMD Instinct MI350X",
                bdf="0000:05:00.0",
                compute_units=128,  # as printed; possibly a partitioned GPU
                accelerator="mi350x",
            )
        ],
        "6.18.3",
    ),
    ("mi355x.amd-smi-static-clock-json.excerpt.txt", gpus.parse_amd_smi_static_json, [], None),
    (
        "mi300x.amd-smi-list.rocm6.2.txt",
        gpus.parse_amd_smi_list,
        [
            GpuFacts(0, bdf="0000:05:00.0"),
            GpuFacts(1, bdf="0000:26:00.0"),
            GpuFacts(2, bdf="0000:46:00.0"),
        ],
        None,
    ),
    (
        "mi325x-vf.amd-smi-list.txt",
        gpus.parse_amd_smi_list,
        [GpuFacts(0, bdf="0000:83:00.0"), GpuFacts(1, bdf="0000:8b:00.0")],
        None,
    ),
    (
        "mi325x-vf.amd-smi-list-e.txt",
        gpus.parse_amd_smi_list,
        [GpuFacts(0, bdf="0000:83:00.0"), GpuFacts(1, bdf="0000:8b:00.0")],
        None,
    ),
    (
        "mi300x.rocm-smi.txt",
        gpus.parse_rocm_smi_concise,
        [mi300x_by_id(i, None, "AMD Instinct MI300X") for i in range(4)],
        None,
    ),
    (
        "mi300x.rocm-smi-concise.v6x.txt",
        gpus.parse_rocm_smi_concise,
        [mi300x_by_id(i, None, "") for i in range(2)],
        None,
    ),
    (
        "mi300x.rocm-smi-a.txt",
        gpus.parse_rocm_smi_info,
        [
            mi300x_by_id(i, f"0000:{bus}:00.0", "AMD Instinct MI300X OAM")
            for i, bus in enumerate(("26", "46", "65", "85"))
        ],
        "6.7.0",
    ),
    (
        "mi300x.rocm-smi-a.productinfo-section.txt",
        gpus.parse_rocm_smi_info,
        [mi300x_by_id(i, None, "AMD Instinct MI300X OAM") for i in range(4)],
        None,
    ),
    (
        "mi300a.rocm-smi-showproduct.v6.1.1.txt",
        gpus.parse_rocm_smi_info,
        [
            GpuFacts(i, 0x74A0, 0x74A0, "gfx942", "Aqua Vanjaram [Instinct MI300A]")  # no MI300A
            for i in range(4)
        ],
        None,
    ),
    (
        "mi300x-vf.rocm-smi-showproductname.whitespace-collapsed.txt",
        gpus.parse_rocm_smi_info,
        [
            GpuFacts(i, 0x74B5, 0x74A1, "gfx942", "AMD Instinct MI300X VF", accelerator="mi300x")
            for i in range(2)
        ],
        None,
    ),
    (
        "mi300x.rocminfo.txt",
        gpus.parse_rocminfo,
        [
            GpuFacts(0, bdf="0000:26:00.0", **MI300X_ROCMINFO),  # BDFID 9728
            GpuFacts(1, bdf="0000:46:00.0", **MI300X_ROCMINFO),  # BDFID 17920
        ],
        None,
    ),
    (
        "mi250x.rocminfo-excerpt.txt",
        gpus.parse_rocminfo,
        [
            GpuFacts(
                0,
                0x740C,
                arch="gfx90a",
                market_name="AMD Instinct MI250X/MI250",
                bdf="0000:93:00.0",
            )
        ],
        "6.10.5",
    ),
    (
        "mi325x.rocminfo-excerpt.user-condensed.txt",
        gpus.parse_rocminfo,
        [
            GpuFacts(
                0,
                device_id=0x74A5,
                arch="gfx942",
                market_name="AMD Instinct MI325X",
                vram_bytes=268419072 * KIB,
                bdf="0000:75:00.0",  # BDFID 29952
                compute_units=304,
                accelerator="mi325x",
            )
        ],
        "6.14.14",
    ),
    (
        # a different command (`amd-smi metric`) in the same layout: no identity facts
        "mi300x.amd-smi-metric.rocm6.2.txt",
        gpus.parse_amd_smi_static_text,
        [GpuFacts(0)],
        None,
    ),
]

OTHER_FIXTURES = {
    "mi300x.amd-smi-static-vram.jq.json": "test_amd_smi_json_vram_in_both_document_shapes",
    "mi300x.amd-smi-version.rocm6.4.0.txt": "test_amd_smi_version",
    "mi300x-vf.sys-module-amdgpu-version.txt": "test_amdgpu_module_version",
    "pollara-ionic.rdma-link.json": "test_rdma_link",
    # vLLM outputs are not host facts (the verify package reads them); here they only
    # serve as unrelated input in test_every_parser_survives_every_fixture.
    "mi300x.vllm-collect-env.excerpt.txt": "",
    "mi300x.vllm-platform-detect-debug.excerpt.log": "",
    "vllm.metrics.excerpt.prom": "",
}

ALL_PARSERS: list[Callable[[str], object]] = [
    system.parse_line,
    system.parse_int,
    system.parse_os_release,
    system.parse_cpu_model,
    system.parse_cpu_flags,
    system.parse_meminfo_total,
    system.parse_df_avail,
    system.parse_df_size,
    system.parse_groups,
    devices.parse_ls,
    devices.parse_device_access,
    net.parse_ip_addr,
    net.parse_default_route,
    docker.parse_docker_version,
    rocm.parse_rocm_version_file,
    net.parse_rdma_link,
    rocm.parse_amdgpu_module_version,
    rocm.parse_amd_smi_version,
    gpus.parse_amd_smi_static_json,
    gpus.parse_amd_smi_static_text,
    gpus.parse_amd_smi_list,
    gpus.parse_rocm_smi_concise,
    gpus.parse_rocm_smi_info,
    gpus.parse_rocminfo,
]


def fixture_files() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if not p.name.endswith(".source.txt"))


# ------------------------------------------------------------------ GPU fixtures


@pytest.mark.parametrize(
    ("name", "parser", "expected", "driver"), GPU_CASES, ids=[case[0] for case in GPU_CASES]
)
def test_gpu_fixture(
    name: str,
    parser: Callable[[str], GpuInventory],
    expected: list[GpuFacts],
    driver: str | None,
) -> None:
    inventory = parser(fixture(name))
    assert list(identify(inventory.gpus)) == expected
    assert inventory.driver_version == driver


def test_every_fixture_is_covered() -> None:
    covered = {case[0] for case in GPU_CASES} | set(OTHER_FIXTURES)
    assert set(fixture_files()) == covered
    assert all(name in globals() for name in OTHER_FIXTURES.values() if name)


def _json_gpu_records(text: str) -> int:
    """GPU records in an amd-smi JSON document: objects carrying amd-smi's ``gpu`` key."""
    try:
        data = json.loads(text)
    except ValueError:
        return 0  # the truncated excerpt: no valid document, no GPUs
    entries = data.get("gpu_data") if isinstance(data, dict) else data
    return sum(1 for e in entries or () if isinstance(e, dict) and "gpu" in e)


# How many GPUs each tool's raw output lists, counted from the text by the marker each
# tool prints once per GPU, independently of the parsers.
RAW_GPU_COUNT: dict[Callable[[str], GpuInventory], Callable[[str], int]] = {
    gpus.parse_amd_smi_static_json: _json_gpu_records,
    # amd-smi's text layout (static, list, metric): one "GPU: n" header per GPU
    gpus.parse_amd_smi_static_text: lambda t: len(set(re.findall(r"^GPU:\s*(\d+)\s*$", t, re.M))),
    gpus.parse_amd_smi_list: lambda t: len(set(re.findall(r"^GPU:\s*(\d+)\s*$", t, re.M))),
    # rocm-smi's key lines: "GPU[n] : Key: value"
    gpus.parse_rocm_smi_info: lambda t: len(set(re.findall(r"^GPU\[(\d+)\]", t, re.M))),
    # rocm-smi's concise table: a row per GPU, index then "[0x74a1 :" (old) or "2  0x74a1," (v6x)
    gpus.parse_rocm_smi_concise: lambda t: len(
        re.findall(r"^\d+\s+(?:\[0x[0-9a-f]{4} :|\d+\s+0x[0-9a-f]{4},)", t, re.M)
    ),
    # rocminfo: one agent per GPU with "Device Type: GPU" (CPU agents say CPU)
    gpus.parse_rocminfo: lambda t: len(re.findall(r"^\s*Device Type:\s+GPU\s*$", t, re.M)),
}


@pytest.mark.parametrize("name", fixture_files())
def test_every_parser_survives_every_fixture(name: str) -> None:
    """No parser raises on any real-world text, and none invents GPUs from another
    tool's output: each finds exactly the GPUs its own tool's markers show in the text."""
    text = fixture(name)
    for parser in ALL_PARSERS:
        parser(text)  # must not raise on any real-world text, however unrelated
    for gpu_parser, count in RAW_GPU_COUNT.items():
        found = len(gpu_parser(text).gpus)
        assert found == count(text), f"{gpu_parser.__name__} found {found} GPUs in {name}"


@pytest.mark.parametrize(
    ("name", "parser", "expected", "driver"), GPU_CASES, ids=[case[0] for case in GPU_CASES]
)
def test_gpu_cases_agree_with_the_raw_capture(
    name: str,
    parser: Callable[[str], GpuInventory],
    expected: list[GpuFacts],
    driver: str | None,
) -> None:
    """The hand-written expectations above, checked against the capture's own text: the
    GPU count, every device id, BDF, VRAM size, CU count, gfx target and driver version
    is printed in the raw output, and the accelerator named matches the catalog's gfx
    target for it."""
    text = fixture(name)
    lower = text.lower()
    assert len(expected) == RAW_GPU_COUNT[parser](text)
    for gpu in expected:
        for pci_id in (gpu.device_id, gpu.subsystem_id):
            if pci_id is not None:
                assert f"0x{pci_id:04x}" in lower, (name, hex(pci_id))
        if gpu.bdf is not None:
            bus, device, function = (int(x, 16) for x in re.split(r"[:.]", gpu.bdf)[1:])
            bdfid = bus << 8 | device << 3 | function  # rocminfo prints BDFID in decimal
            assert gpu.bdf in lower or re.search(rf"BDFID:\s+{bdfid}\b", text), gpu.bdf
        if gpu.vram_bytes is not None:  # rocminfo prints KB, amd-smi/rocm-smi MB or B
            sizes = {gpu.vram_bytes // KIB, gpu.vram_bytes // MIB, gpu.vram_bytes}
            assert any(re.search(rf"\b{size}\b", text) for size in sizes), gpu.vram_bytes
        if gpu.compute_units is not None:
            assert re.search(rf"(?i)compute.?units?:\s+{gpu.compute_units}\b", text)
        if gpu.arch is not None:
            assert gpu.arch in text
        if gpu.market_name:
            assert gpu.market_name in text
        if gpu.accelerator is not None and gpu.arch is not None:
            assert catalog.accelerator(gpu.accelerator).arch == gpu.arch
    if driver is not None:
        assert driver in text


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "\x00\xff garbage: : :\n[{", "GPU: x\n  ASIC:\n", '{"gpu_data": 7}', "[1, 2"],
)
def test_garbled_input_yields_nothing(text: str) -> None:
    for parser in (
        gpus.parse_amd_smi_static_json,
        gpus.parse_amd_smi_static_text,
        gpus.parse_amd_smi_list,
        gpus.parse_rocm_smi_concise,
        gpus.parse_rocm_smi_info,
        gpus.parse_rocminfo,
    ):
        assert parser(text) == GpuInventory()
    assert rocm.parse_amd_smi_version(text) == AmdSmiVersion()
    assert net.parse_rdma_link(text) == ()
    assert net.parse_ip_addr(text) == ()


def test_amd_smi_json_vram_in_both_document_shapes() -> None:
    """The jq excerpt is `.[0]["vram"]` of a 6.2-era bare list; ROCm 7 wraps the list."""
    vram = json.loads(fixture("mi300x.amd-smi-static-vram.jq.json"))
    bare = json.dumps([{"gpu": 0, "vram": vram}])
    wrapped = json.dumps({"gpu_data": [{"gpu": 0, "vram": vram}]})
    for text in (bare, wrapped):
        assert gpus.parse_amd_smi_static_json(text).gpus == (GpuFacts(0, vram_bytes=196592 * MIB),)


def test_amd_smi_vram_mb_is_mib() -> None:
    """amd-smi's 196592 MB and rocminfo's VRAM pool on an MI300X are the same bytes."""
    vram = json.loads(fixture("mi300x.amd-smi-static-vram.jq.json"))
    amd_smi = gpus.parse_amd_smi_static_json(json.dumps([{"gpu": 0, "vram": vram}]))
    rocminfo = gpus.parse_rocminfo(fixture("mi300x.rocminfo.txt"))
    assert amd_smi.gpus[0].vram_bytes == rocminfo.gpus[0].vram_bytes == 206_141_652_992


def test_amd_smi_json_and_text_agree() -> None:
    """The mi350x text fixture's values in amd-smi's JSON key layout, both shapes."""
    record: dict[str, Any] = {
        "gpu": 0,
        "asic": {
            "market_name": "AMD Instinct MI350X",
            "device_id": "0x75a0",
            "subsystem_id": "0x75a0",
            "asic_serial": "<redacted>",
            "num_compute_units": 128,
            "target_graphics_version": "gfx950",
        },
        "bus": {"bdf": "0000:05:00.0", "max_pcie_speed": {"value": 32, "unit": "GT/s"}},
        "driver": {"name": "amdgpu", "version": "6.18.3"},
    }
    text = gpus.parse_amd_smi_static_text(fixture("mi350x.amd-smi-static-partial.txt"))
    banner = "WARNING: User is missing the following required groups: render\n"
    for document in ([record], {"gpu_data": [record]}):
        assert gpus.parse_amd_smi_static_json(banner + json.dumps(document, indent=4)) == text


def test_rocminfo_bdfid_decodes_device_and_function() -> None:
    """BDFID is bus << 8 | device << 3 | function; the fixtures only have device 0."""
    text = fixture("mi300x.rocminfo.txt").replace("BDFID:                   9728", "BDFID: 9753")
    assert [g.bdf for g in gpus.parse_rocminfo(text).gpus] == ["0000:26:03.1", "0000:46:00.0"]


def test_rocm_smi_vram_and_device_id_keys() -> None:
    """``--showmeminfo vram``/``--showid`` lines (key names as rocm-smi prints them; no
    captured fixture has them). ``Device ID`` wins over the VF's ``Card Model``."""
    text = (
        "GPU[0]\t\t: Device ID: 0x74a1\n"
        "GPU[0]\t\t: Card Model: 0x74b5\n"
        "GPU[0]\t\t: VRAM Total Memory (B): 206141652992\n"
        "GPU[0]\t\t: VRAM Total Used Memory (B): 11304960\n"
    )
    gpu = gpus.parse_rocm_smi_info(text).gpus[0]
    assert (gpu.device_id, gpu.vram_bytes) == (0x74A1, 196592 * MIB)


def test_amd_smi_version() -> None:
    parsed = rocm.parse_amd_smi_version(fixture("mi300x.amd-smi-version.rocm6.4.0.txt"))
    # the inbox driver made amd-smi print a mangled kernel banner as "amdgpu version"
    assert parsed == AmdSmiVersion(tool="25.3.0+ede62f2", library="25.3.0", rocm="6.4.0")


def test_amd_smi_version_with_dkms_driver() -> None:
    line = "AMDSMI Tool: 24.6.3+9578815 | AMDSMI Library version: 24.6.3.0 | ROCm version: 6.2.1 | amdgpu version: 6.8.5"  # noqa: E501
    assert rocm.parse_amd_smi_version(line).amdgpu == "6.8.5"


def test_amdgpu_module_version() -> None:
    text = fixture("mi300x-vf.sys-module-amdgpu-version.txt")
    assert rocm.parse_amdgpu_module_version(text) == "6.12.12"


def test_rdma_link() -> None:
    links = net.parse_rdma_link(fixture("pollara-ionic.rdma-link.json"))
    assert links == tuple(
        RdmaLink(f"ionic_{i}", 1, "ACTIVE", netdev)
        for i, netdev in enumerate(("benic8p1", "benic7p1", "benic5p1", "benic6p1"))
    )


def test_same_host_tools_merge_by_bdf() -> None:
    """rocm-smi -a and rocminfo come from one 4x MI300X host; rocminfo kept 2 GPUs."""
    smi = gpus.parse_rocm_smi_info(fixture("mi300x.rocm-smi-a.txt")).gpus
    info = gpus.parse_rocminfo(fixture("mi300x.rocminfo.txt")).gpus
    merged = identify(merge_gpus(smi, info))
    assert [g.bdf for g in merged] == [g.bdf for g in smi]
    assert [g.compute_units for g in merged] == [304, 304, None, None]
    assert [g.arch for g in merged] == ["gfx942", "gfx942", None, None]
    assert merged[0].market_name == "AMD Instinct MI300X OAM"  # primary source wins
    assert merged[1].vram_bytes == 196592 * MIB


def test_merge_by_index_only_without_bdfs() -> None:
    concise = gpus.parse_rocm_smi_concise(fixture("mi300x.rocm-smi-concise.v6x.txt")).gpus
    info = gpus.parse_rocminfo(fixture("mi300x.rocminfo.txt")).gpus
    merged = merge_gpus(concise, info)
    assert [g.bdf for g in merged] == ["0000:26:00.0", "0000:46:00.0"]
    assert merge_gpus(concise, info[:1]) == concise  # counts differ: no guessing


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        (GpuFacts(0, device_id=0x74A1), "mi300x"),
        (GpuFacts(0, device_id=0x74B5, arch="gfx942"), "mi300x"),  # MI300X VF
        (GpuFacts(0, device_id=0x74B9, subsystem_id=0x74A5), "mi325x"),  # MI325X VF
        (GpuFacts(0, device_id=0x7FFF, subsystem_id=0x74A5), "mi325x"),  # new VF id
        (GpuFacts(0, device_id=0x75A0, arch="gfx950"), "mi350x"),
        (GpuFacts(0, device_id=0x75A3), "mi355x"),
        (GpuFacts(0, device_id=0x74A1, arch="gfx950"), None),  # id and arch disagree
        (GpuFacts(0, device_id=0x74A0, arch="gfx942", vram_bytes=192 * GIB), None),  # MI300A
        (GpuFacts(0, arch="gfx942", vram_bytes=196592 * MIB), "mi300x"),
        (GpuFacts(0, arch="gfx942", vram_bytes=262128 * MIB), "mi325x"),
        (GpuFacts(0, arch="gfx950", vram_bytes=288 * GIB), None),  # MI350X or MI355X
        (GpuFacts(0, arch="gfx942"), None),
        (GpuFacts(0, market_name="AMD Instinct MI300X"), None),  # never by name
    ],
)
def test_match_accelerator(gpu: GpuFacts, expected: str | None) -> None:
    assert match_accelerator(gpu) == expected


# ------------------------------------------------------------ generic Linux facts

OS_RELEASE = """\
PRETTY_NAME="Ubuntu 22.04.5 LTS"
NAME="Ubuntu"
VERSION="22.04.5 LTS (Jammy Jellyfish)"
ID=ubuntu
"""
MEMINFO = "MemTotal:       24684096 kB\nMemFree:        21174148 kB\n"
DF_AVAIL = "      Avail\n83014033408\n"
DF_SHM = """\
Filesystem       1B-blocks  Used   Available Use% Mounted on
tmpfs          25276514304     0 25276514304   0% /dev/shm
"""
DF_SHM_WRAPPED = """\
Filesystem                                  1B-blocks  Used Available Use% Mounted on
/dev/mapper/a-very-long-volume-group-name-for-shm
                                          68719476736     0 68719476736   0% /dev/shm
"""
IP_ADDR = json.dumps(
    [
        {
            "ifname": "lo",
            "operstate": "UNKNOWN",
            "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}],
        },
        {
            "ifname": "eth0",
            "operstate": "UP",
            "addr_info": [
                {"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
                {"family": "inet6", "local": "fd00::2", "prefixlen": 64},
            ],
        },
        {"ifname": "ifb0", "operstate": "DOWN", "addr_info": []},
    ]
)


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        (system.parse_os_release, OS_RELEASE, "Ubuntu 22.04.5 LTS"),
        (system.parse_os_release, 'NAME="Debian GNU/Linux"\nVERSION="12"\n', "Debian GNU/Linux 12"),
        (system.parse_line, "6.8.0-79-generic\n", "6.8.0-79-generic"),
        (system.parse_int, "192\n", 192),
        (system.parse_int, "cat: /proc/sys/kernel/numa_balancing: No such file\n", None),
        (system.parse_cpu_model, "model name\t: AMD EPYC 9474F 48-Core Processor\n",
         "AMD EPYC 9474F 48-Core Processor"),
        # an EPYC 9004 (Zen 4: AVX-512 with BF16) and a 7003 (Zen 3: AVX2 only), cut short
        (system.parse_cpu_flags, "flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512_bf16 "
         "avx512_vnni vaes\n", ("avx2", "avx512f", "avx512_bf16", "avx512_vnni")),
        (system.parse_cpu_flags, "flags\t\t: fpu sse2 fma avx2 sha_ni vaes\n", ("avx2",)),
        (system.parse_cpu_flags, "Features\t: fp asimd evtstrm aes\n", ()),  # arm64
        (system.parse_cpu_flags, "", None),
        (system.parse_meminfo_total, MEMINFO, 24684096 * KIB),
        (system.parse_df_avail, DF_AVAIL, 83014033408),
        (system.parse_df_avail, "df: /nope: No such file or directory\n", None),
        (system.parse_df_size, DF_SHM, 25276514304),
        (system.parse_df_size, DF_SHM_WRAPPED, 64 * GIB),
        (system.parse_groups, "amd video render docker\n", ("amd", "video", "render", "docker")),
        (devices.parse_ls, "renderD129\ncard1\nby-path\nrenderD128\n",
         ("by-path", "card1", "renderD128", "renderD129")),
        (devices.parse_device_access, "rw\n", (True, True)),
        (devices.parse_device_access, "denied\n", (True, False)),
        (devices.parse_device_access, "absent\n", (False, False)),
        (net.parse_default_route, '[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"}]',
         "eth0"),
        (net.parse_default_route, "[]", None),
        (docker.parse_docker_version, "27.5.1\n", "27.5.1"),
        (docker.parse_docker_version, "20.10.24+dfsg1\n", "20.10.24+dfsg1"),
        (docker.parse_docker_version, "\n", None),
        (docker.parse_docker_version, "Cannot connect to the Docker daemon at unix:///var/run/"
         "docker.sock. Is the docker daemon running?\n", None),
        (rocm.parse_rocm_version_file, "6.4.0-47\n", "6.4.0"),
        (rocm.parse_rocm_version_file, "", None),
    ],
)  # fmt: skip
def test_linux_parser(parser: Callable[[str], object], text: str, expected: object) -> None:
    assert parser(text) == expected


def test_ip_addr() -> None:
    assert net.parse_ip_addr(IP_ADDR) == (
        NetInterface("lo", "UNKNOWN", ("127.0.0.1/8",)),
        NetInterface("eth0", "UP", ("192.0.2.2/24", "fd00::2/64")),
        NetInterface("ifb0", "DOWN", ()),
    )


# ----------------------------------------------------------------- serialisation


def sample_host() -> HostFacts:
    found = gpus.parse_rocminfo(fixture("mi325x.rocminfo-excerpt.user-condensed.txt")).gpus
    return HostFacts(
        hostname="gpu-01",
        os_name="Ubuntu 22.04.5 LTS",
        kernel="6.8.0-79-generic",
        cpu_model="AMD EPYC 9474F 48-Core Processor",
        cpu_count=192,
        cpu_flags=("avx2", "avx512f", "avx512_bf16"),
        ram_bytes=2 * 1024 * GIB,
        disk_path="/data/models",
        disk_free_bytes=3 * 1024 * GIB,
        gpus=identify(found),
        rocm_version="6.4.0",
        amdgpu_version="6.14.14",
        docker_version="27.5.1",
        kfd_present=True,
        kfd_accessible=True,
        dri_nodes=("card1", "renderD128"),
        dri_accessible=True,
        user="amd",
        uid=1000,
        groups=("amd", "video", "render"),
        shm_bytes=64 * GIB,
        numa_balancing=0,
        interfaces=net.parse_ip_addr(IP_ADDR),
        rdma_devices=("ionic_0", "ionic_1"),
        default_route_nic="eth0",
    )


def floats(value: Any) -> Any:
    """What Pulumi hands back: every number a float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [floats(v) for v in value]
    if isinstance(value, dict):
        return {k: floats(v) for k, v in value.items()}
    return value


def test_to_dict_is_plain_json() -> None:
    host = sample_host()
    data = host.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["gpus"][0]["device_id"] == 0x74A5
    assert data["gpus"][0]["accelerator"] == "mi325x"
    assert data["interfaces"][1] == {
        "name": "eth0",
        "state": "UP",
        "addresses": ["192.0.2.2/24", "fd00::2/64"],
    }


def test_from_dict_round_trips_pulumi_floats() -> None:
    host = sample_host()
    assert HostFacts.from_dict(floats(json.loads(json.dumps(host.to_dict())))) == host
