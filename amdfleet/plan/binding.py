"""The addresses a cloud plan is bound to once its instances exist.

A multi-node cloud stack is planned before its instances exist, yet its nodes meet at
their cluster addresses (an instance's private address when the cloud gives one, else
its public address). The planner writes each node's cluster address as the placeholder
of its :class:`~amdfleet.plan.models.AddressSlot` and lists the slots in
``DeploymentPlan.address_slots``. The placeholders stand in exactly these values:

- ``NodePlan.cluster_address``, and the head's in ``ClusterPlan.head_address``;
- the head's address in every node's ``argv`` (``Launch.head_address``: ``--master-addr``,
  ``--dist-init-addr host:port``) and a worker's ``ray_argv`` (``--address host:port``);
- each node's own address in its ``ray_argv`` and ``env`` (the engine's ``node_env``,
  e.g. ``VLLM_HOST_IP``).

Everything downstream reads them from those fields: the launch files, the command check,
the cluster check (``ClusterCheckNode.cluster_address``), the fabric runs (gloo's head,
mpirun's hosts) and the engine output's argv. :func:`bind_addresses` returns the plan
with the instances' addresses in their place (and each node's public address as
``NodePlan.address``): the plan that planning the stack on those hosts gives. The
Pulumi program binds it once, in an Output of the instances' addresses
(:mod:`amdfleet.cloud_fleet`); nothing else substitutes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from amdfleet.addresses import host_port
from amdfleet.plan.models import DeploymentPlan, InstanceAddresses, NodePlan

_Bind = Callable[[str], str]


def bind_addresses(
    plan: DeploymentPlan, instances: Mapping[str, InstanceAddresses]
) -> DeploymentPlan:
    """``plan`` with each node's instance addresses (``instances``: node name → its
    addresses) in place of its address slots' placeholders; its ``address_slots``
    empty. Raises KeyError when a node of ``plan`` has no instance in ``instances``."""
    values = {slot.placeholder: instances[slot.node].cluster for slot in plan.address_slots}
    if not values:
        return plan
    pattern = re.compile("(" + "|".join(re.escape(p) for p in values) + r")(?::(\d+))?")

    def bind(text: str) -> str:
        # host_port brackets an IPv6 address before its port, as the planner would have.
        return pattern.sub(
            lambda m: host_port(values[m[1]], int(m[2])) if m[2] else values[m[1]], text
        )

    nodes = tuple(_bound_node(node, instances[node.name], bind) for node in plan.nodes)
    cluster = plan.cluster
    if cluster is not None:
        cluster = cluster.model_copy(update={"head_address": bind(cluster.head_address)})
    return plan.model_copy(update={"nodes": nodes, "cluster": cluster, "address_slots": ()})


def _bound_node(node: NodePlan, instance: InstanceAddresses, bind: _Bind) -> NodePlan:
    return node.model_copy(
        update={
            "address": instance.public,
            "cluster_address": bind(node.cluster_address) if node.cluster_address else None,
            "argv": tuple(bind(arg) for arg in node.argv),
            "ray_argv": tuple(bind(arg) for arg in node.ray_argv),
            "env": {key: bind(value) for key, value in node.env.items()},
        }
    )
