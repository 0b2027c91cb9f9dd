"""Cluster preflight, pure parts: agreement across nodes, the collective interface, RDMA
devices (the reachability test's commands and parsers: test_reachability.py).

GPU facts come from real captured tool outputs (../shared/fixtures/amd-hosts, each with
its source); the ``ip -j addr`` text is a real capture from a hostlab host (see
:data:`IP_ADDR`).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from amdfleet.components.props import cluster_check_props
from amdfleet.config import load_stack_file
from amdfleet.errors import PreflightError, PropsError
from amdfleet.findings import Finding
from amdfleet.plan import plan
from amdfleet.providers.cluster_check import ClusterCheckProps
from amdfleet.remote.cluster import (
    CLUSTER,
    ClusterReport,
    NodeFacts,
    check_agreement,
    check_network,
    collective_interface,
    engine_version_command,
    parse_engine_version,
    raise_for_failures,
)
from amdfleet.remote.facts import gpus, net, rocm
from amdfleet.remote.facts.records import HostFacts
from amdfleet.remote.transport.target import HostTarget

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "amd-hosts"

# `ip -j addr` on a hostlab host (tests/support/hostlab.py) after
# `ip addr add fd77::10/64 dev eth0 nodad; ip addr add 192.168.50.2/24 dev lo`.
IP_ADDR = (
    '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,'
    '"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,'
    '"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00",'
    '"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host",'
    '"label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},'
    '{"family":"inet","local":"192.168.50.2","prefixlen":24,"scope":"global","label":"lo",'
    '"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6",'
    '"local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,'
    '"preferred_life_time":4294967295}]},{"ifindex":2,"link_index":1271,"ifname":"eth0",'
    '"flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue",'
    '"operstate":"UP","group":"default","txqlen":1000,"link_type":"ether",'
    '"address":"36:b4:f7:1b:b3:8e","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0,'
    '"addr_info":[{"family":"inet","local":"10.77.88.10","prefixlen":24,"scope":"global",'
    '"label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},'
    '{"family":"inet6","local":"fd77::10","prefixlen":64,"scope":"global","nodad":true,'
    '"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6",'
    '"local":"fe80::34b4:f7ff:fe1b:b38e","prefixlen":64,"scope":"link","tentative":true,'
    '"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]'
)
LAB_HOST = HostFacts(hostname="host0", interfaces=net.parse_ip_addr(IP_ADDR))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def mi300x_host(name: str) -> HostFacts:
    """4x MI300X (`rocm-smi -a`, driver 6.7.0) with the ROCm 6.4.0 that `amd-smi version`
    printed on an MI300X host."""
    inventory = gpus.parse_rocm_smi_info(fixture("mi300x.rocm-smi-a.txt"))
    release = rocm.parse_amd_smi_version(fixture("mi300x.amd-smi-version.rocm6.4.0.txt")).rocm
    return HostFacts(
        hostname=name,
        gpus=gpus.identify(inventory.gpus),
        rocm_version=release,
        amdgpu_version=inventory.driver_version,
        interfaces=LAB_HOST.interfaces,
    )


def mi325x_host(name: str) -> HostFacts:
    """The MI325X `rocminfo` agent (ROCk module 6.14.14); its issue names rocm-core 7.0.1
    (the output itself prints no ROCm release)."""
    inventory = gpus.parse_rocminfo(fixture("mi325x.rocminfo-excerpt.user-condensed.txt"))
    return HostFacts(
        hostname=name,
        gpus=gpus.identify(inventory.gpus),
        rocm_version="7.0.1",
        amdgpu_version=inventory.driver_version,
    )


def node(name: str, host: HostFacts, **fields: object) -> NodeFacts:
    values: dict[str, object] = {"cluster_address": "10.77.88.10", **fields}
    return NodeFacts(name, host, **values)  # type: ignore[arg-type]


def failed(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings if not f.ok}


# ------------------------------------------------------------------ interfaces


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.77.88.10", "eth0"),
        ("fd77::10", "eth0"),
        ("FD77:0::10", "eth0"),  # another spelling of the same IPv6 address
        ("fe80::34b4:f7ff:fe1b:b38e", "eth0"),
        ("127.0.0.1", "lo"),
        ("127.0.0.53", "lo"),  # in 127.0.0.0/8: loopback even though not listed itself
        ("::1", "lo"),
        ("192.168.50.2", "lo"),  # an address on lo is lo's, loopback range or not
        ("10.77.88.99", None),  # in eth0's subnet, but not eth0's address
        ("gpu-01.example.com", None),  # a host name: resolved on the node first
    ],
)
def test_collective_interface(address: str, expected: str | None) -> None:
    assert collective_interface(LAB_HOST, address) == expected


def test_network_passes_when_the_stack_names_the_carrying_interface() -> None:
    interface, findings = check_network(node("host0", LAB_HOST, network_interface="eth0"))
    assert interface == "eth0"
    assert [(f.check, f.ok, f.detail) for f in findings] == [
        ("network_interface", True, "10.77.88.10 is on eth0")
    ]


def test_network_interface_mismatch_names_both_and_the_fix() -> None:
    interface, findings = check_network(node("host1", LAB_HOST, network_interface="eth1"))
    assert interface == "eth0"  # derived from the facts, whatever the stack says
    [issue] = failed(findings).values()
    assert issue.subject == "host1"
    assert (
        issue.detail
        == "the stack names eth1, but 10.77.88.10 is on eth0; host1 has no eth1 (lo, eth0)"
    )
    assert "set network_interface of host host1 to 'eth0'" in issue.hint


def test_address_on_no_interface_lists_what_the_node_has() -> None:
    interface, findings = check_network(node("host1", LAB_HOST, cluster_address="10.77.88.99"))
    assert interface is None
    issue = failed(findings)["network_interface"]
    assert "10.77.88.99 is on none of host1's interfaces" in issue.detail
    assert "eth0: 10.77.88.10/24, fd77::10/64" in issue.detail
    assert "private_address of host host1" in issue.hint


def test_a_host_name_is_matched_by_the_addresses_it_resolved_to_on_the_node() -> None:
    named = node("host0", LAB_HOST, cluster_address="host0.lab", addresses=("fd77::10",))
    interface, findings = check_network(named)
    assert interface == "eth0"
    assert findings[0].detail == "host0.lab (fd77::10) is on eth0"


def test_a_down_interface_is_reported() -> None:
    down = tuple(replace(i, state="DOWN") if i.name == "eth0" else i for i in LAB_HOST.interfaces)
    _, findings = check_network(node("host0", replace(LAB_HOST, interfaces=down)))
    assert failed(findings)["network_interface"].hint.startswith(
        "bring it up on host0: sudo ip link set eth0 up"
    )


def test_rdma_devices_named_in_the_stack_must_exist() -> None:
    links = net.parse_rdma_link(fixture("pollara-ionic.rdma-link.json"))
    host = replace(LAB_HOST, rdma_devices=tuple(link.name for link in links))
    _, ok = check_network(node("gpu-a", host, rdma_devices=("ionic_0", "ionic_3")))
    assert [(f.check, f.ok) for f in ok] == [("network_interface", True), ("rdma_devices", True)]
    _, findings = check_network(node("gpu-a", host, rdma_devices=("ionic_0", "rdma4", "rdma5")))
    issue = failed(findings)["rdma_devices"]
    assert issue.detail == (
        "rdma4, rdma5 not found on gpu-a (`rdma link` lists: ionic_0, ionic_1, ionic_2, ionic_3)"
    )
    assert "rdma_devices of host gpu-a" in issue.hint


# ------------------------------------------------------------------- agreement


def test_an_identical_fleet_agrees() -> None:
    nodes = [node(f"gpu-{i}", mi300x_host(f"gpu-{i}")) for i in range(3)]
    findings = check_agreement(nodes)
    assert [(f.subject, f.check, f.ok) for f in findings] == [
        (CLUSTER, "gpus", True),
        (CLUSTER, "rocm", True),
        (CLUSTER, "amdgpu_driver", True),
    ]
    assert findings[0].detail == "all 3 node(s): 4x mi300x"


def test_a_mixed_fleet_names_which_nodes_have_which_value() -> None:
    nodes = [
        node("gpu-a", mi300x_host("gpu-a")),
        node("gpu-b", mi300x_host("gpu-b")),
        node("gpu-c", mi325x_host("gpu-c")),
    ]
    issues = failed(check_agreement(nodes))
    assert set(issues) == {"gpus", "rocm", "amdgpu_driver"}
    assert issues["gpus"].detail == "nodes disagree: gpu-a, gpu-b: 4x mi300x; gpu-c: 1x mi325x"
    assert issues["gpus"].hint.startswith(
        "every node needs the same GPUs (4x mi300x on gpu-a, gpu-b): replace gpu-c"
    )
    assert issues["rocm"].detail == "nodes disagree: gpu-a, gpu-b: 6.4.0; gpu-c: 7.0.1"
    assert issues["rocm"].hint.startswith("install ROCm 6.4.0 on gpu-c")
    assert issues["amdgpu_driver"].detail == "nodes disagree: gpu-a, gpu-b: 6.7.0; gpu-c: 6.14.14"
    assert "install amdgpu driver 6.7.0 on gpu-c" in issues["amdgpu_driver"].hint


def test_on_a_tie_the_head_is_the_reference() -> None:
    nodes = [node("head", mi325x_host("head")), node("worker", mi300x_host("worker"))]
    issues = failed(check_agreement(nodes))
    assert issues["rocm"].hint.startswith("install ROCm 7.0.1 on worker (as on head)")


def test_digests_versions_and_commits_are_compared_where_known() -> None:
    host = mi300x_host("gpu")
    sha = "sha256:" + "a" * 64
    nodes = [
        node("gpu-a", host, image_digest=sha, engine_version="0.9.2", model_commit="c0ffee"),
        node("gpu-b", host, image_digest=sha, engine_version=None, model_commit="c0ffee"),
        node("gpu-c", host, image_digest="", engine_version="0.8.5", model_commit="beef"),
    ]
    issues = failed(check_agreement(nodes))
    assert issues["image_digest"].detail == f"nodes disagree: gpu-a, gpu-b: {sha}; gpu-c: unknown"
    assert issues["image_digest"].hint == (
        f"pin engine.image to one digest (name@{sha}, as on gpu-a, gpu-b) so every node pulls "
        "the same build; gpu-c pulled another"
    )
    # gpu-b's version is unknown (its command failed: reported on its own), not a value
    assert issues["engine_version"].detail == "nodes disagree: gpu-a: 0.9.2; gpu-c: 0.8.5"
    assert issues["model_revision"].detail == "nodes disagree: gpu-a, gpu-b: c0ffee; gpu-c: beef"
    assert "pin weights.revision to one commit (e.g. c0ffee" in issues["model_revision"].hint


def test_values_nobody_supplied_are_not_checked() -> None:
    names = [f.check for f in check_agreement([node("a", LAB_HOST), node("b", LAB_HOST)])]
    assert names == ["gpus", "rocm", "amdgpu_driver"]


def test_every_failure_of_every_node_is_rendered_together() -> None:
    nodes = [
        node("gpu-a", mi300x_host("gpu-a"), network_interface="eth0"),
        node("gpu-c", mi325x_host("gpu-c"), network_interface="eth1"),
    ]
    findings = check_agreement(nodes)
    for each in nodes:
        findings += check_network(each)[1]
    with pytest.raises(PreflightError) as caught:
        raise_for_failures(ClusterReport({}, tuple(findings)))
    text = str(caught.value)
    assert text.startswith("cluster preflight failed:\n")
    assert (
        "  - [cluster] gpus: nodes disagree: gpu-a: 4x mi300x; gpu-c: 1x mi325x\n      hint: "
        in text
    )
    assert "  - [gpu-c] network_interface: 10.77.88.10 is on none of gpu-c's interfaces" in text
    assert text.count("hint: ") == len(caught.value.failures) == 4


def test_no_failure_raises_nothing() -> None:
    raise_for_failures(ClusterReport({"a": "eth0"}, (Finding("a", "x", True, "fine"),)))


# ------------------------------------------------------------- engine version


def test_engine_version_command_runs_the_engines_python() -> None:
    command = engine_version_command(sys.executable, "pytest")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert parse_engine_version(result.stdout) == pytest.__version__
    assert parse_engine_version("") is None


# ------------------------------------------------------------- props from a plan


def test_props_from_a_two_node_plan() -> None:
    deployment = plan(load_stack_file("mi300x-2node-llama405b-bf16").spec)
    targets = [node.target for node in deployment.nodes]
    assert all(isinstance(t, HostTarget) for t in targets)
    props = cluster_check_props(deployment, [t for t in targets if t is not None])
    assert [(n.name, n.cluster_address, n.network_interface) for n in props.nodes] == [
        ("mi300x-a", "10.10.0.1", "enp1s0"),
        ("mi300x-b", "10.10.0.2", "enp1s0"),
    ]
    assert props.nodes[0].rdma_devices == tuple(f"rdma{i}" for i in range(8))
    assert props.ports == {"master_port": 29500}
    assert props.engine_dir == deployment.head.remote_dir
    assert props.container == deployment.engine.container_name
    assert props.engine_version_command is None  # docker: the image digest says it


def test_props_from_a_ray_plan() -> None:
    deployment = plan(
        load_stack_file(str(Path(__file__).parent / "stacks" / "Pulumi.ray-2node.yaml")).spec
    )
    targets = [node.target for node in deployment.nodes if node.target is not None]
    assert cluster_check_props(deployment, targets).ports == {
        "master_port": 29500,
        "ray_port": 6380,
    }


def test_props_name_each_node_once_and_give_one_value_per_node() -> None:
    deployment = plan(load_stack_file("mi300x-2node-llama405b-bf16").spec)
    props = cluster_check_props(deployment, [n.target for n in deployment.nodes if n.target])
    inputs = props.to_inputs(facts={"mi300x-a": {}})
    with pytest.raises(
        PropsError, match=r"facts must have one entry per node \(mi300x-a, mi300x-b\)"
    ):
        ClusterCheckProps.from_inputs(inputs)
    twice = {**props.to_inputs(), "nodes": [inputs["nodes"][0]] * 2}
    with pytest.raises(PropsError, match="node names must be unique"):
        ClusterCheckProps.from_inputs(twice)
