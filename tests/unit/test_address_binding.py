"""A multi-node cloud plan's deploy-time addresses (amdfleet/plan/binding.py): the planner
declares one slot per node and writes its placeholder where the node's cluster address
goes; binding the instances' addresses gives the plan that planning the stack on those
hosts gives, for every engine and backend that runs on several nodes, with and without
a private network, over IPv4 and IPv6."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from amdfleet.config import StackSpec, load_stack_file
from amdfleet.plan import DeploymentPlan, plan
from amdfleet.plan.binding import bind_addresses
from amdfleet.plan.models import AddressSlot, InstanceAddresses

STACKS = Path(__file__).resolve().parents[2] / "stacks"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb1z8n0YvZ2pJx7v4ZrKq8m2nT3sQ1u5w6y7z8a9b0c"
IPV4 = {
    0: InstanceAddresses(public="203.0.113.10", private="10.0.0.10"),
    1: InstanceAddresses(public="203.0.113.11", private="10.0.0.11"),
}
IPV4_PUBLIC_ONLY = {i: InstanceAddresses(public=a.public) for i, a in IPV4.items()}
IPV6 = {
    0: InstanceAddresses(public="2001:db8::10", private="fd00::10"),
    1: InstanceAddresses(public="2001:db8::11", private="fd00::11"),
}


def _two_node_cloud(tmp_path: Path, **config: dict[str, Any]) -> StackSpec:
    """The committed DigitalOcean stack over two droplets, pipeline-parallel, with
    ``config``'s sections updated."""
    document = yaml.safe_load((STACKS / "Pulumi.do-mi300x-llama70b.yaml").read_text())
    sections = document["config"]
    sections["amdfleet:fleet"]["cloud"].update(count=2, max_hourly_usd=40, max_total_usd=500)
    sections["amdfleet:topology"]["nodes"] = 2
    sections["amdfleet:parallelism"]["pp"] = 2
    for key, values in config.items():
        sections.setdefault(f"amdfleet:{key}", {}).update(values)
    path = tmp_path / "Pulumi.do-2node.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_stack_file(str(path)).spec


def _on_hosts(spec: StackSpec, instances: dict[str, InstanceAddresses]) -> StackSpec:
    """``spec`` with its cloud fleet replaced by SSH hosts at the instances' addresses
    (what the program planned again on, before the plan was bound instead)."""
    assert spec.fleet.cloud is not None
    hosts = [
        {
            "name": name,
            "connection": "ssh",
            "address": addresses.public,
            "user": "root",
            "key_path": spec.fleet.cloud.ssh_key_path,
            "host_key": HOST_KEY,
            **({"private_address": addresses.private} if addresses.private else {}),
        }
        for name, addresses in instances.items()
    ]
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["fleet"] = {"hosts": hosts}
    return StackSpec.model_validate(data)


def _comparable(deployment: DeploymentPlan) -> dict[str, Any]:
    """The plan's JSON without what only a fleet of hosts names (targets) or only a cloud
    fleet holds (its instances, its slots)."""
    data = deployment.model_dump(mode="json", exclude={"cloud", "address_slots"})
    for node in data["nodes"]:
        node.pop("target")
    return data


VARIANTS = {
    "vllm-mp": ({}, IPV4),
    "vllm-mp-no-private-network": ({}, IPV4_PUBLIC_ONLY),
    "vllm-mp-ipv6": ({}, IPV6),
    "vllm-ray": ({"parallelism": {"backend": "ray"}}, IPV4),
    "vllm-ray-ipv6": ({"parallelism": {"backend": "ray"}}, IPV6),
    "vllm-fabric": ({"fabric": {"enabled": True}}, IPV4_PUBLIC_ONLY),
    "sglang": ({"engine": {"name": "sglang"}}, IPV4),
    "sglang-ipv6": ({"engine": {"name": "sglang"}}, IPV6),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bound_plan_is_the_plan_on_the_instances_addresses(tmp_path: Path, variant: str) -> None:
    config, by_rank = VARIANTS[variant]
    spec = _two_node_cloud(tmp_path, **config)
    unbound = plan(spec)
    instances = {node.name: by_rank[node.rank] for node in unbound.nodes}

    bound = bind_addresses(unbound, instances)

    assert _comparable(bound) == _comparable(plan(_on_hosts(spec, instances)))
    assert bound.address_slots == ()
    assert bound.cloud == unbound.cloud
    assert [n.address for n in bound.nodes] == [a.public for a in instances.values()]
    assert [n.cluster_address for n in bound.nodes] == [a.cluster for a in instances.values()]


def test_a_multi_node_cloud_plan_declares_each_nodes_cluster_address(tmp_path: Path) -> None:
    deployment = plan(_two_node_cloud(tmp_path))

    slots = deployment.address_slots
    assert slots == tuple(AddressSlot(node=n.name, kind="cluster") for n in deployment.nodes)
    head, worker = deployment.nodes
    head_slot, worker_slot = (slot.placeholder for slot in slots)
    assert head_slot == f"<{head.name}-cluster-address>"
    assert (head.address, head.cluster_address) == (None, head_slot)
    assert worker.cluster_address == worker_slot
    assert deployment.cluster is not None and deployment.cluster.head_address == head_slot
    for node in deployment.nodes:  # every node meets the head at its address
        assert node.argv[node.argv.index("--master-addr") + 1] == head_slot
    assert (head.env["VLLM_HOST_IP"], worker.env["VLLM_HOST_IP"]) == (head_slot, worker_slot)
    bound = bind_addresses(deployment, {n.name: IPV4[n.rank] for n in deployment.nodes})
    assert "-cluster-address>" not in json.dumps(bound.model_dump(mode="json"))


@pytest.mark.parametrize("stack", ["do-mi300x-llama70b", "mi300x-2node-llama405b-bf16", "local"])
def test_a_plan_that_names_its_addresses_has_no_slots(stack: str) -> None:
    """A one-node cloud plan (nothing reaches its node but the API, at the instance's
    address) and a fleet of hosts bind nothing."""
    deployment = plan(load_stack_file(stack).spec)

    assert deployment.address_slots == ()
    assert bind_addresses(deployment, {}) is deployment


def test_binding_needs_every_nodes_instance(tmp_path: Path) -> None:
    deployment = plan(_two_node_cloud(tmp_path))

    with pytest.raises(KeyError, match=deployment.nodes[1].name):
        bind_addresses(deployment, {deployment.nodes[0].name: IPV4[0]})
