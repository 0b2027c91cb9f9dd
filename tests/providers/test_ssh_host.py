"""SshHost through amdfleet's provider plugin, against real SSH hosts.

The fact probe runs for real on a lab host (a Debian box without GPUs); preflight is
exercised both ways: a CPU requirement passes, a GPU requirement fails with every
missing piece listed. GPU outputs themselves are covered by the parser tests on captured
amd-smi/rocm-smi/rocminfo outputs (tests/unit/test_facts.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from amdfleet.providers.ssh_host import SshHost, SshHostProps
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.target import HostTarget
from tests.support.engine_log import EngineLog
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.pulumi_host import ProviderCallError, ProviderHost, resource_urn

pytestmark = pytest.mark.netns
URN = resource_urn("ssh-host", SshHost)


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    return hostlab(2)


def _props(host: HostTarget, requirement: HostRequirement) -> dict[str, Any]:
    """Props as the Fleet component builds them."""
    props = SshHostProps(host=host, requirement=requirement)
    return props.to_inputs()


CPU = HostRequirement(accelerator="cpu", gpu_count=0, runtime="process", weights_dir="/opt")
MI300X = HostRequirement(
    accelerator="mi300x",
    gpu_count=8,
    runtime="docker",
    min_shm_bytes=1 << 50,
    weights_dir="/opt/models",
    weights_bytes=1 << 60,
)


def test_cpu_host_passes_and_reports_its_facts(provider_host: ProviderHost, lab: HostLab) -> None:
    require_netns(lab)
    created = provider_host.create(
        provider_host.check(_props(lab.host_target(0), CPU), urn=URN).inputs, urn=URN
    )
    facts = created.outputs["facts"]
    assert created.id == "host0"
    assert created.outputs["hostname"] == facts["hostname"] == "host0"
    with lab.connect(0) as conn:  # the same facts, read on the host by other means
        nproc = int(conn.run("nproc", timeout=10).stdout)
        memtotal = conn.run("grep MemTotal /proc/meminfo", timeout=10).stdout.split()
        user = conn.run("id -un", timeout=10).stdout.strip()
    assert facts["cpu_count"] == nproc
    assert memtotal[2] == "kB" and facts["ram_bytes"] == int(memtotal[1]) * 1024
    assert facts["user"] == user
    assert (facts["gpus"], facts["kfd_present"]) == ([], False)  # the lab has no GPUs
    checks = {c["name"]: c for c in created.outputs["checks"]}
    # a CPU requirement checks no GPU devices or groups (tests/unit/test_preflight.py)
    assert not {"gpu_count", "gpu_model", "kfd", "dri", "groups", "docker"} & set(checks)
    assert "disk" in checks and checks["disk"]["detail"]
    assert all(c["ok"] and not c["hint"] for c in checks.values()), checks


def test_gpu_requirement_fails_listing_every_check_with_hints(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(
            provider_host.check(_props(lab.host_target(1), MI300X), urn=URN).inputs, urn=URN
        )
    message = caught.value.message
    assert message.startswith("amdfleet.errors.PreflightError: preflight failed:")
    for check in ("gpu_count", "kfd", "dri", "shm", "disk"):
        assert f"[host1] {check}" in message, message
    assert message.count("hint:") >= 5
    # the lab host has no GPU, no /dev/kfd and far less than 1 PiB of shm (tests/unit/
    # test_preflight.py has each check's hint against the same facts)
    assert re.search(r"\[host1\] gpu_count: .*\n?.*hint: .*install ROCm", message), message
    assert re.search(r"\[host1\] kfd: .*\n?.*hint: .*modprobe amdgpu", message), message
    assert re.search(r"\[host1\] shm: .*\n?.*hint: .*/dev/shm", message), message


def test_a_changed_host_key_is_refused(provider_host: ProviderHost, lab: HostLab) -> None:
    wrong = lab.host_target(0).model_copy(update={"host_key": lab.host_target(1).host_key})
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(provider_host.check(_props(wrong, CPU), urn=URN).inputs, urn=URN)
    assert "HostKeyMismatchError" in caught.value.message
    assert "ssh-keyscan" in caught.value.message


def test_refresh_shows_drift(provider_host: ProviderHost, lab: HostLab) -> None:
    require_netns(lab)
    checked = provider_host.check(_props(lab.host_target(0), CPU), urn=URN).inputs
    created = provider_host.create(checked, urn=URN)
    with lab.connect(0) as conn:
        conn.run("hostname drifted-host0", timeout=10)
        try:
            read = provider_host.read(created.id, created.outputs, inputs=checked, urn=URN)
        finally:
            conn.run("hostname host0", timeout=10)
    assert read.outputs["hostname"] == "drifted-host0"
    assert read.outputs["facts"]["hostname"] == "drifted-host0"


def test_diff_replaces_on_another_host_and_updates_on_a_new_requirement(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    checked = provider_host.check(_props(lab.host_target(0), CPU), urn=URN).inputs
    created = provider_host.create(checked, urn=URN)
    other = provider_host.check(_props(lab.host_target(1), CPU), urn=URN).inputs
    diff = provider_host.diff(created.id, created.outputs, other, old_inputs=checked, urn=URN)
    assert diff.replaces == ["host"]
    stricter = replace(CPU, weights_bytes=1 << 60)
    news = provider_host.check(_props(lab.host_target(0), stricter), urn=URN).inputs
    diff = provider_host.diff(created.id, created.outputs, news, old_inputs=checked, urn=URN)
    assert (diff.changes, diff.replaces) == (True, [])
    with pytest.raises(ProviderCallError, match=r"\[host0\] disk"):
        provider_host.update(created.id, created.outputs, news, old_inputs=checked, urn=URN)
    same = provider_host.diff(created.id, created.outputs, checked, old_inputs=checked, urn=URN)
    assert same.changes is False


def test_progress_shows_each_step_and_notes_only_a_passed_preflight(
    provider_host: ProviderHost, engine_log: EngineLog, lab: HostLab
) -> None:
    """Through the plugin started with an engine address, as the Pulumi CLI starts it."""
    require_netns(lab)
    target = lab.target(0)
    passing, failing = (
        provider_host.urn("host-progress-ok", SshHost),
        provider_host.urn("host-progress-gpu", SshHost),
    )
    provider_host.create(_props(lab.host_target(0), CPU), urn=passing)
    with pytest.raises(
        ProviderCallError, match=r"(?s)PreflightError: .*\[host0\] gpu_count: found 0 GPU"
    ):
        provider_host.create(_props(lab.host_target(0), MI300X), urn=failing)

    steps = [
        f"connecting to {target.user}@{target.address}:{target.port}",
        "collecting facts (OS, CPU, memory, disk, GPUs, ROCm, docker)",
        "running preflight checks",
    ]
    for urn in (passing, failing):
        assert engine_log.messages(urn, ephemeral=True) == steps
    [note] = engine_log.messages(passing, ephemeral=False)
    assert note.startswith("host0: Debian GNU/Linux") and "no GPU; preflight passed (" in note
    assert engine_log.messages(failing, ephemeral=False) == []  # the error says it all
