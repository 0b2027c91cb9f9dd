"""The :class:`Fleet` component: the stack's hosts, each connected, inventoried and
preflight-checked (one :class:`~amdfleet.providers.ssh_host.SshHost` per node)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from amdfleet import hostkeys
from amdfleet.components.props import PlanInput, TargetInput, bound, ssh_host_props
from amdfleet.errors import PlanError
from amdfleet.findings import config_issue
from amdfleet.plan import DeploymentPlan, NodePlan
from amdfleet.plan.binding import bind_addresses
from amdfleet.plan.models import InstanceAddresses
from amdfleet.providers.ssh_host import SshHost, host_facts
from amdfleet.remote.facts import HostFacts
from amdfleet.remote.transport.target import HostTarget

_NO_TARGET = "list the host under fleet.hosts"


@dataclass(frozen=True)
class NodeHost:
    """Where a node runs when that is known only once its cloud instance exists: its
    host target, the address its API is reached at and its private address (Outputs of
    the instance; the private one None or empty when the cloud gives none)."""

    target: TargetInput
    address: pulumi.Input[str]
    private_address: pulumi.Input[str | None] = None


class Fleet(pulumi.ComponentResource):
    """The stack's hosts, each connected, inventoried and preflight-checked; ``facts``
    holds each host's facts as the typed record, ``targets`` and ``addresses`` each
    host's target and API address (in node order; Outputs on a cloud fleet), ``plan``
    the plan on these hosts (an Output when its addresses are bound to them)."""

    plan: PlanInput
    ssh_hosts: list[SshHost]
    targets: list[TargetInput]
    addresses: list[pulumi.Input[str] | None]
    facts: list[pulumi.Output[HostFacts]]
    inventory: pulumi.Output[list[dict[str, Any]]]

    def __init__(
        self,
        name: str,
        plan: DeploymentPlan,
        opts: pulumi.ResourceOptions | None = None,
        *,
        node_hosts: Sequence[NodeHost] | None = None,
    ) -> None:
        """``node_hosts``: the nodes' hosts when the plan cannot name them (a cloud fleet's
        instances, one per node in rank order); else the plan's targets and addresses.
        A plan with deploy-time addresses (``plan.address_slots``) is bound to theirs."""
        if not pulumi.runtime.is_dry_run():
            _refuse_placeholder_host_keys(plan)
        super().__init__("amdfleet:index:Fleet", name, None, opts)
        if node_hosts is None:
            self.targets = [_target(plan, node) for node in plan.nodes]
            self.addresses = [node.address for node in plan.nodes]
        else:
            self.targets = [host.target for host in node_hosts]
            self.addresses = [host.address for host in node_hosts]
        self.plan = _on_hosts(plan, node_hosts)
        self.ssh_hosts = [
            SshHost(
                f"{name}-{node.name}",
                bound(functools.partial(ssh_host_props, node), target),
                pulumi.ResourceOptions(parent=self),
            )
            for node, target in zip(plan.nodes, self.targets, strict=True)
        ]
        self.facts = [host.facts.apply(host_facts) for host in self.ssh_hosts]
        self.inventory = pulumi.Output.all(
            pulumi.Output.all(*self.facts), pulumi.Output.all(*self.addresses)
        ).apply(
            lambda values: [
                _inventory(node, facts, address)
                for node, facts, address in zip(plan.nodes, *values, strict=True)
            ]
        )
        self.register_outputs({"inventory": self.inventory})


def _on_hosts(plan: DeploymentPlan, node_hosts: Sequence[NodeHost] | None) -> PlanInput:
    """``plan`` as it runs on ``node_hosts``: itself when it names every address, else an
    Output of it with the hosts' addresses bound (one bind, once they are known)."""
    if not plan.address_slots:
        return plan
    if node_hosts is None:
        raise ValueError(f"stack {plan.stack}: a plan with deploy-time addresses needs hosts")
    addresses = pulumi.Output.all(
        *[pulumi.Output.all(host.address, host.private_address) for host in node_hosts]
    )
    return addresses.apply(
        lambda pairs: bind_addresses(
            plan,
            {
                node.name: InstanceAddresses(public=public, private=private or None)
                for node, (public, private) in zip(plan.nodes, pairs, strict=True)
            },
        )
    )


def _refuse_placeholder_host_keys(plan: DeploymentPlan) -> None:
    """``pulumi up`` connects to the hosts: a placeholder pin (accepted by ``amdfleet plan``
    and ``pulumi preview``, which connect to nothing) stops it before anything registers."""
    targets = [node.target for node in plan.nodes if node.target]
    separate = plan.image.build_host not in [node.name for node in plan.nodes]
    build_target = plan.image.build_target if separate else None
    hostkeys.refuse_placeholder_host_keys(targets, build_target, f"stack {plan.stack}")


def _target(plan: DeploymentPlan, node: NodePlan) -> HostTarget:
    if node.target is None:  # a cloud instance that does not exist yet
        issue = config_issue("fleet", f"node {node.name} has no host to connect to", _NO_TARGET)
        raise PlanError([issue], f"stack {plan.stack}")
    return node.target


def _inventory(node: NodePlan, facts: HostFacts, address: str | None) -> dict[str, Any]:
    return {
        "name": node.name,
        "rank": node.rank,
        "role": node.role,
        "address": address,
        "hostname": facts.hostname,
        "os": facts.os_name,
        "kernel": facts.kernel,
        "rocm_version": facts.rocm_version,
        "amdgpu_version": facts.amdgpu_version,
        "docker_version": facts.docker_version,
        "gpus": [
            {
                "index": g.index,
                "accelerator": g.accelerator,
                "arch": g.arch,
                "device_id": g.device_id,
                "vram_bytes": g.vram_bytes,
                "bdf": g.bdf,
            }
            for g in facts.gpus
        ],
    }
