"""The probe script run for real with sh on this (GPU-less) machine, and its parser."""

from __future__ import annotations

import grp
import json
import os
import platform
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from amdfleet.remote.facts import system
from amdfleet.remote.facts.gpus import identify, parse_amd_smi_static_text
from amdfleet.remote.facts.probe import (
    build_probe_script,
    format_section,
    parse_probe_output,
    probe_time_limit,
    split_sections,
)
from amdfleet.remote.facts.records import GpuFacts, HostFacts, NetInterface
from amdfleet.remote.facts.registry import FACTS, Fact, register
from amdfleet.remote.facts.system import parse_line

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "amd-hosts"
MIB = 1024**2


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def run_probe(script: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the script the way the ssh module does: ``sh -s`` with it on stdin."""
    env = dict(os.environ)
    if extra_path is not None:
        env["PATH"] = f"{extra_path}:{env.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(
        ["sh", "-s"], input=script, capture_output=True, text=True, env=env, timeout=120
    )


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    tool.chmod(0o755)


def read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def default_route_nic() -> str | None:
    for line in Path("/proc/net/route").read_text(encoding="utf-8").splitlines()[1:]:
        iface, destination, *_ = line.split()
        if destination == "00000000":
            return iface
    return None


def own_groups() -> set[str]:
    return {grp.getgrgid(gid).gr_name for gid in {*os.getgroups(), os.getgid()}}


# ------------------------------------------------------------- real runs with sh


def test_probe_on_this_machine(tmp_path: Path) -> None:
    weights = tmp_path / "models" / "not created yet"
    slack = 64 * MIB  # other processes write to this disk meanwhile
    # The free space is judged against readings taken just before and after the probe;
    # when another process moved the disk by more than the slack in between, the
    # window says nothing, so it is taken again (at most three times).
    for _ in range(3):
        free_before = shutil.disk_usage(tmp_path).free
        proc = run_probe(build_probe_script(str(weights)))
        free_after = shutil.disk_usage(tmp_path).free
        assert proc.returncode == 0, proc.stderr
        host = parse_probe_output(proc.stdout)
        low, high = sorted((free_before, free_after))
        if host.disk_free_bytes is None or low - slack <= host.disk_free_bytes <= high + slack:
            break

    assert host.hostname == os.uname().nodename
    assert host.kernel == os.uname().release
    assert host.os_name == platform.freedesktop_os_release()["PRETTY_NAME"]
    assert host.cpu_count == len(os.sched_getaffinity(0))
    assert host.ram_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert host.disk_path == str(weights)
    assert host.disk_free_bytes is not None  # measured at tmp_path, the nearest existing dir
    assert low - slack <= host.disk_free_bytes <= high + slack
    assert host.shm_bytes == shutil.disk_usage("/dev/shm").total
    assert host.uid == os.getuid()
    assert host.user == pwd.getpwuid(os.getuid()).pw_name
    assert set(host.groups) == own_groups()
    assert host.numa_balancing == read_int("/proc/sys/kernel/numa_balancing")
    assert {i.name for i in host.interfaces} == {name for _, name in socket.if_nameindex()}
    assert host.default_route_nic == default_route_nic()
    assert host.kfd_present == os.path.exists("/dev/kfd")
    assert host.dri_nodes == tuple(
        sorted(os.listdir("/dev/dri") if os.path.isdir("/dev/dri") else [])
    )


def test_probe_without_gpu_tools(tmp_path: Path) -> None:
    """No amd-smi/rocm-smi/rocminfo on this machine: every GPU fact is simply empty."""
    if any(shutil.which(t) for t in ("amd-smi", "rocm-smi", "rocminfo")):
        pytest.skip("a ROCm tool is installed here")
    proc = run_probe(build_probe_script(str(tmp_path)))
    sections = split_sections(proc.stdout)
    host = parse_probe_output(proc.stdout)
    assert proc.returncode == 0
    assert sections["amd_smi_static_json"].exit_code == 127  # not found
    assert sections["amd_smi_static"].exit_code == 127  # fallbacks were tried
    assert sections["rocm_smi"].exit_code == 127
    assert sections["rocminfo"].exit_code == 127
    assert (host.gpus, host.rocm_version, host.amdgpu_version) == ((), None, None)


def test_docker_version_matches_the_cli(tmp_path: Path) -> None:
    host = parse_probe_output(run_probe(build_probe_script(str(tmp_path))).stdout)
    docker = shutil.which("docker")
    direct = (
        subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if docker
        else None
    )
    expected = direct.stdout.strip() if direct and direct.returncode == 0 else None
    assert host.docker_version == expected


def test_disk_path_is_quoted(tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    weights = tmp_path / f"it's $(touch {marker}) `touch {marker}`; touch {marker}"
    free_before = shutil.disk_usage(tmp_path).free
    host = parse_probe_output(run_probe(build_probe_script(str(weights))).stdout)
    free_after = shutil.disk_usage(tmp_path).free
    assert host.disk_path == str(weights)
    # the quoted path was measured (at tmp_path, its nearest existing directory)
    assert host.disk_free_bytes is not None
    low, high = sorted((free_before, free_after))
    assert low - 64 * MIB <= host.disk_free_bytes <= high + 64 * MIB
    assert not marker.exists()


def test_fake_amd_smi_text_fallback(tmp_path: Path) -> None:
    """amd-smi without --json support: the text form is collected, rocm-smi is not."""
    static = shlex.quote(str(FIXTURES / "mi325x-vf.amd-smi-static-g0.txt"))
    version = shlex.quote(str(FIXTURES / "mi300x.amd-smi-version.rocm6.4.0.txt"))
    rocminfo = shlex.quote(str(FIXTURES / "mi325x.rocminfo-excerpt.user-condensed.txt"))
    fake_tool(
        tmp_path,
        "amd-smi",
        f'case "$*" in\n  version) cat {version} ;;\n  "static --json") echo "bad option"; '
        f"exit 2 ;;\n  static) cat {static} ;;\n  *) exit 1 ;;\nesac",
    )
    fake_tool(tmp_path, "rocminfo", f"cat {rocminfo}")

    proc = run_probe(build_probe_script(str(tmp_path)), extra_path=tmp_path)
    sections = split_sections(proc.stdout)
    host = parse_probe_output(proc.stdout)

    assert proc.returncode == 0
    assert sections["amd_smi_static_json"].exit_code == 2
    assert sections["amd_smi_static"].exit_code == 0
    assert "rocm_smi" not in sections
    expected = identify(parse_amd_smi_static_text(fixture("mi325x-vf.amd-smi-static-g0.txt")).gpus)
    assert host.gpus == expected
    assert host.gpus[0].accelerator == "mi325x"
    assert host.rocm_version == "6.4.0"
    if not os.path.exists("/sys/module/amdgpu/version"):
        assert host.amdgpu_version == "6.14.14"  # from rocminfo's ROCk module line


def test_hanging_gpu_tool_is_cut_off(tmp_path: Path) -> None:
    fake_tool(tmp_path, "amd-smi", 'case "$1" in static) exec sleep 60 ;; *) exit 1 ;; esac')
    started = time.monotonic()
    proc = run_probe(build_probe_script(str(tmp_path), gpu_timeout_s=1), extra_path=tmp_path)
    elapsed = time.monotonic() - started
    sections = split_sections(proc.stdout)
    assert proc.returncode == 0
    assert sections["amd_smi_static_json"].exit_code == 124
    assert sections["amd_smi_static"].exit_code == 124
    assert "rocm_smi" in sections
    assert elapsed < probe_time_limit(gpu_timeout_s=1)
    assert probe_time_limit(gpu_timeout_s=1) < probe_time_limit()
    assert parse_probe_output(proc.stdout).gpus == ()


def test_script_is_posix_sh() -> None:
    checked = subprocess.run(
        ["sh", "-n"], input=build_probe_script("/data/models"), capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


# --------------------------------------------------------- synthetic combined output

LINUX_SECTIONS = {
    "hostname": "mi300x-01\n",
    "os_release": 'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\n',
    "kernel": "6.8.0-79-generic\n",
    "cpu_model": "model name\t: AMD EPYC 9474F 48-Core Processor\n",
    "cpu_count": "192\n",
    "meminfo": "MemTotal:       2377459284 kB\nMemFree:        2000000000 kB\n",
    "disk_path": "/data/models\n",
    "disk_free": "      Avail\n3298534883328\n",
    "user": "amd\n",
    "uid": "1000\n",
    "groups": "amd video render docker\n",
    "numa_balancing": "1\n",
    "shm": "Filesystem 1B-blocks Used Available Use% Mounted on\n"
    "tmpfs 1217259098112 0 1217259098112 0% /dev/shm\n",
    "ip_addr": json.dumps(
        [
            {
                "ifname": "ens1",
                "operstate": "UP",
                "addr_info": [{"local": "10.0.0.5", "prefixlen": 16}],
            }
        ]
    ),
    "default_route": '[{"dst":"default","gateway":"10.0.0.1","dev":"ens1"}]',
    "docker_version": "27.5.1\n",
    "kfd": "rw\n",
    "dri_nodes": "by-path\ncard1\nrenderD128\n",
    "dri_access": "rw\n",
}


def combined(sections: dict[str, str | tuple[str, int]]) -> str:
    parts = ["Warning: Permanently added 'mi300x-01' to the list of known hosts.\n"]
    for name, value in sections.items():
        output, rc = value if isinstance(value, tuple) else (value, 0)
        parts.append(format_section(name, output, rc))
    return "".join(parts)


def test_combined_output_from_rocm_smi_host() -> None:
    """rocm-smi -a and rocminfo captured on the same 4x MI300X host, no amd-smi JSON."""
    text = combined(
        {
            **LINUX_SECTIONS,
            "rdma_link": fixture("pollara-ionic.rdma-link.json"),
            "amdgpu_module": ("", 1),
            "rocm_version_file": ("", 1),
            "amd_smi_version": fixture("mi300x.amd-smi-version.rocm6.4.0.txt"),
            "amd_smi_static_json": ("", 127),
            "amd_smi_static": ("", 127),
            "rocm_smi": fixture("mi300x.rocm-smi-a.txt"),
            "rocminfo": fixture("mi300x.rocminfo.txt"),
        }
    )
    host = parse_probe_output(text)

    bdfs = ["0000:26:00.0", "0000:46:00.0", "0000:65:00.0", "0000:85:00.0"]
    assert [g.bdf for g in host.gpus] == bdfs
    assert {g.accelerator for g in host.gpus} == {"mi300x"}
    assert {g.market_name for g in host.gpus} == {"AMD Instinct MI300X OAM"}
    assert [g.compute_units for g in host.gpus] == [304, 304, None, None]  # rocminfo: 2 GPUs
    assert [g.vram_bytes for g in host.gpus] == [196592 * MIB] * 2 + [None] * 2
    assert host == HostFacts(
        hostname="mi300x-01",
        os_name="Ubuntu 22.04.5 LTS",
        kernel="6.8.0-79-generic",
        cpu_model="AMD EPYC 9474F 48-Core Processor",
        cpu_count=192,
        ram_bytes=2377459284 * 1024,
        disk_path="/data/models",
        disk_free_bytes=3 * 1024**4,
        gpus=host.gpus,
        rocm_version="6.4.0",
        amdgpu_version="6.7.0",  # rocm-smi "Driver version"; amd-smi printed a banner
        docker_version="27.5.1",
        kfd_present=True,
        kfd_accessible=True,
        dri_nodes=("by-path", "card1", "renderD128"),
        dri_accessible=True,
        user="amd",
        uid=1000,
        groups=("amd", "video", "render", "docker"),
        shm_bytes=1217259098112,
        numa_balancing=1,
        interfaces=(NetInterface("ens1", "UP", ("10.0.0.5/16",)),),
        rdma_devices=("ionic_0", "ionic_1", "ionic_2", "ionic_3"),
        default_route_nic="ens1",
    )


def test_amd_smi_json_is_preferred_and_completed_by_rocminfo() -> None:
    vram = json.loads(fixture("mi300x.amd-smi-static-vram.jq.json"))
    record = {
        "gpu": 0,
        "asic": {"device_id": "0x74a1", "market_name": "AMD Instinct MI300X"},
        "bus": {"bdf": "0000:26:00.0"},
        "vram": vram,
        "driver": {"name": "amdgpu", "version": "6.10.5"},
    }
    text = combined(
        {
            "amdgpu_module": "6.12.12\n",
            "rocm_version_file": "6.4.0-47\n",
            "amd_smi_static_json": json.dumps({"gpu_data": [record]}, indent=4),
            "amd_smi_static": fixture("mi300x.amd-smi-static.rocm6.2.txt"),  # not used
            "rocminfo": fixture("mi300x.rocminfo.txt"),
        }
    )
    host = parse_probe_output(text)
    assert host.gpus == (
        GpuFacts(
            0,
            device_id=0x74A1,
            arch="gfx942",  # from rocminfo, same BDF
            market_name="AMD Instinct MI300X",
            vram_bytes=196592 * MIB,
            bdf="0000:26:00.0",
            compute_units=304,  # from rocminfo
            accelerator="mi300x",
        ),
    )
    assert host.amdgpu_version == "6.12.12"  # /sys/module/amdgpu/version wins
    assert host.rocm_version == "6.4.0"
    assert host.hostname == ""  # a missing section is an empty fact, not an error


def test_docker_counts_only_when_the_command_succeeded() -> None:
    host = parse_probe_output(combined({"docker_version": ("27.5.1\n", 1)}))
    assert host.docker_version is None


def test_split_sections_edge_cases() -> None:
    text = (
        "noise before\n"
        + format_section("a", "line 1\n<<<amdfleet-probe end b rc=0>>>\nline 3\n", 3)
        + "noise between\n"
        + format_section("empty", "")
        + "<<<amdfleet-probe begin cut>>>\npartial output\n"
    )
    sections = split_sections(text)
    assert sections["a"].output == "line 1\n<<<amdfleet-probe end b rc=0>>>\nline 3\n"
    assert sections["a"].exit_code == 3
    assert not sections["a"].ok
    assert (sections["empty"].output, sections["empty"].ok) == ("", True)
    assert (sections["cut"].output, sections["cut"].exit_code) == ("partial output", None)
    assert set(sections) == {"a", "empty", "cut"}


@pytest.mark.parametrize("text", ["", "sh: 1: syntax error\n", "Permission denied (publickey).\n"])
def test_output_without_sections_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="no amdfleet probe sections"):
        parse_probe_output(text)


def test_every_registered_fact_is_probed_once_in_registration_order() -> None:
    script = build_probe_script("/data/models")
    lines = [f"amdfleet_probe {name} " for name in FACTS]
    assert all(script.count(line) == 1 for line in lines)
    positions = [script.index(line) for line in lines]
    assert positions == sorted(positions)
    assert len(FACTS) == 28  # 23 facts of the host, amd-smi's version, 4 GPU sources


def test_a_fact_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'hostname' is registered twice"):
        register(Fact("hostname", "hostname", parse_line))
    assert FACTS["hostname"] is system.HOSTNAME
