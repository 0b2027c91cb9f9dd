"""Cluster preflight: what every node of a multi-node engine must share, and whether each
node reaches the head, tested from the nodes themselves.

Pure, like the rest of :mod:`amdfleet.remote`: command builders, parsers of what those
commands print, and checks over facts already collected. The ClusterCheck provider
(:mod:`amdfleet.providers.cluster_check`) runs the commands over SSH.

Checks (each a :class:`~amdfleet.findings.Finding` about a node, or about all of them
as :data:`CLUSTER`; passing or not, a failing one has a fix):

* agreement across nodes (:func:`check_agreement`): GPU model and count, ROCm release,
  amdgpu driver, and when known the engine image digest (docker runtime) or engine
  version (process runtime) and the staged model commit. A mismatch names which nodes
  have which value.
* each node's network (:func:`check_network`): the interface carrying the node's cluster
  address (:func:`collective_interface`, the interface collective traffic must use)
  against the one the stack names, its link state, and the RDMA devices the stack names.
* reachability (:func:`amdfleet.remote.reachability.check_reachability`): every node
  connects to a short-lived listener on the head at each rendezvous port.

:func:`raise_for_failures` raises one :class:`~amdfleet.errors.PreflightError` listing
every failure of every node.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amdfleet.errors import PreflightError
from amdfleet.findings import Finding
from amdfleet.remote.facts.gpus import match_accelerator
from amdfleet.remote.facts.records import GpuFacts, HostFacts

CLUSTER = "cluster"
"""The subject of a finding about all nodes together (an agreement check)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class NodeFacts:
    """What the checks know of one node. ``addresses`` are the IP addresses its
    ``cluster_address`` stands for (itself when it is one; resolved on the node when it
    is a host name); ``network_interface`` and ``rdma_devices`` are what the stack names.
    ``engine_version`` is what the node reported, None when not asked or not known."""

    name: str
    facts: HostFacts
    cluster_address: str
    addresses: tuple[str, ...] = ()
    network_interface: str | None = None
    rdma_devices: tuple[str, ...] = ()
    image_digest: str | None = None
    engine_version: str | None = None
    model_commit: str | None = None

    @property
    def ips(self) -> tuple[str, ...]:
        """The cluster address's IP forms (the address itself when it is an IP)."""
        return self.addresses or ((self.cluster_address,) if _ip(self.cluster_address) else ())


@dataclass(frozen=True)
class ClusterReport:
    """The result of the cluster preflight: each node's collective interface (None when
    no interface carries its cluster address) and every finding."""

    interfaces: Mapping[str, str | None]
    findings: tuple[Finding, ...]

    @property
    def failures(self) -> tuple[Finding, ...]:
        """The findings that did not pass."""
        return tuple(f for f in self.findings if not f.ok)


def raise_for_failures(report: ClusterReport) -> None:
    """Raise :class:`PreflightError` listing every failure of every node, if any."""
    if report.failures:
        raise PreflightError(report.failures, heading="cluster preflight failed")


# ----------------------------------------------------------------- interfaces


def collective_interface(facts: HostFacts, cluster_address: str) -> str | None:
    """The interface whose addresses include ``cluster_address`` (an IPv4 or IPv6
    address; a loopback address belongs to the loopback interface even when only
    127.0.0.1/8 is listed). None when no interface carries it or it is not an IP."""
    wanted = _ip(cluster_address)
    if wanted is None:
        return None
    for interface in facts.interfaces:
        if any(_interface_ip(a) == wanted for a in interface.addresses):
            return interface.name
    if wanted.is_loopback:
        return next((i.name for i in facts.interfaces if _has_loopback(i.addresses)), None)
    return None


CLUSTER_FACT_KEYS = (
    "hostname",
    "kernel",
    "gpus",
    "rocm_version",
    "amdgpu_version",
    "interfaces",
    "rdma_devices",
)
"""The host facts the cluster check reads: what nodes must agree on, and the network."""


def cluster_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a host's facts the cluster check reads. Only these are its input, so a
    refresh that sees another free-disk figure does not re-run the check (which would
    probe the master port of a serving cluster for nothing)."""
    return {key: facts.get(key) for key in CLUSTER_FACT_KEYS if key in facts}


def collective_env(interface: str | None) -> dict[str, str]:
    """The environment naming ``interface`` for gloo and RCCL's socket traffic (empty when
    no interface was derived: the engine then picks one itself)."""
    if not interface:
        return {}
    return {"GLOO_SOCKET_IFNAME": interface, "NCCL_SOCKET_IFNAME": interface}


def check_network(node: NodeFacts) -> tuple[str | None, list[Finding]]:
    """The node's collective interface, and the findings about it and about the RDMA
    devices the stack names."""
    interface = next(
        (found for ip in node.ips if (found := collective_interface(node.facts, ip))), None
    )
    findings = [_interface_finding(node, interface)]
    if node.rdma_devices:
        findings.append(_rdma_finding(node))
    return interface, findings


# ----------------------------------------------------------------- agreement


def check_agreement(nodes: Sequence[NodeFacts]) -> list[Finding]:
    """One finding per value all nodes must share (see the module docstring); image
    digests, engine versions and model commits only when some node knows one.

    ``nodes`` are in rank order (the head first): on a tie, the head's value is the one
    the fix asks the others to match.
    """
    findings = [
        _agreement(nodes, "gpus", _gpu_value, _GPU_HINT),
        _agreement(nodes, "rocm", _rocm_value, _ROCM_HINT),
        _agreement(nodes, "amdgpu_driver", _driver_value, _DRIVER_HINT),
    ]
    optional: tuple[tuple[str, Callable[[NodeFacts], str | None], str], ...] = (
        ("image_digest", _digest_of, _DIGEST_HINT),
        ("engine_version", _version_of, _VERSION_HINT),
        ("model_revision", _commit_of, _COMMIT_HINT),
    )
    for name, value, hint in optional:
        known = [node for node in nodes if value(node) is not None]
        if known:
            findings.append(_agreement(known, name, _shown(value), hint))
    return findings


def engine_version_command(python: str, distribution: str) -> str:
    """Print the installed version of the engine's Python ``distribution`` with the
    engine's own ``python`` (process runtime)."""
    script = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return f"{shlex.quote(python)} -c {shlex.quote(script)} {shlex.quote(distribution)}"


def parse_engine_version(output: str) -> str | None:
    """The version :func:`engine_version_command` printed (its last non-empty line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else None


# ------------------------------------------------------------ network helpers


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _interface_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_interface(address).ip
    except ValueError:
        return None


def _has_loopback(addresses: Sequence[str]) -> bool:
    return any((ip := _interface_ip(a)) is not None and ip.is_loopback for a in addresses)


def _interface_finding(node: NodeFacts, found: str | None) -> Finding:
    named, address = node.network_interface, node.cluster_address
    shown = address if node.ips in ((), (address,)) else f"{address} ({', '.join(node.ips)})"
    if found is None:
        return Finding(
            node.name,
            "network_interface",
            False,
            f"{shown} is on none of {node.name}'s interfaces ({_addresses(node.facts)})",
            f"set private_address of host {node.name} to the address of {node.name} the other "
            "nodes reach it at (one of its own addresses), or fix the address on the host",
        )
    state = next((i.state for i in node.facts.interfaces if i.name == found), "")
    if named is not None and named != found:
        names = ", ".join(i.name for i in node.facts.interfaces) or "none"
        exists = "" if named in names.split(", ") else f"; {node.name} has no {named} ({names})"
        return Finding(
            node.name,
            "network_interface",
            False,
            f"the stack names {named}, but {shown} is on {found}{exists}",
            f"set network_interface of host {node.name} to {found!r}, or remove it: amdfleet "
            "uses the interface that carries the node's cluster address",
        )
    if state.upper() == "DOWN":
        return Finding(
            node.name,
            "network_interface",
            False,
            f"{found}, which carries {shown}, is down",
            f"bring it up on {node.name}: sudo ip link set {found} up (and check its cable "
            "or switch port)",
        )
    return Finding(node.name, "network_interface", True, f"{shown} is on {found}")


def _rdma_finding(node: NodeFacts) -> Finding:
    present = node.facts.rdma_devices
    missing = [d for d in node.rdma_devices if d not in present]
    if not missing:
        named = ", ".join(node.rdma_devices)
        return Finding(node.name, "rdma_devices", True, f"{named} present")
    has = ", ".join(present) or "none"
    return Finding(
        node.name,
        "rdma_devices",
        False,
        f"{', '.join(missing)} not found on {node.name} (`rdma link` lists: {has})",
        f"load the NIC's RDMA driver on {node.name} (e.g. ionic_rdma, mlx5_ib, bnxt_re) and "
        f"check `rdma link`, or correct rdma_devices of host {node.name}",
    )


def _addresses(facts: HostFacts) -> str:
    listed = [f"{i.name}: {', '.join(i.addresses) or 'no address'}" for i in facts.interfaces]
    return "; ".join(listed) or "no interface was reported"


# ------------------------------------------------------------ agreement helpers


def _agreement(
    nodes: Sequence[NodeFacts], name: str, value: Callable[[NodeFacts], str], hint: str
) -> Finding:
    groups: dict[str, list[str]] = {}
    for node in nodes:
        groups.setdefault(value(node), []).append(node.name)
    if len(groups) == 1:
        [(shared, members)] = groups.items()
        return Finding(CLUSTER, name, True, f"all {len(members)} node(s): {shared}")
    counts = Counter({v: len(m) for v, m in groups.items()})
    top = max(counts.values())
    reference = next(v for v in groups if counts[v] == top)  # first seen: the head's on a tie
    odd = [n for v, members in groups.items() if v != reference for n in members]
    detail = "nodes disagree: " + "; ".join(f"{', '.join(m)}: {v}" for v, m in groups.items())
    fix = hint.format(reference=reference, have=", ".join(groups[reference]), odd=", ".join(odd))
    return Finding(CLUSTER, name, False, detail, fix)


def _gpu_value(node: NodeFacts) -> str:
    if not node.facts.gpus:
        return "no GPU"
    kinds = Counter(_gpu_kind(gpu) for gpu in node.facts.gpus)
    return " + ".join(f"{count}x {kind}" for kind, count in sorted(kinds.items()))


def _gpu_kind(gpu: GpuFacts) -> str:
    known = gpu.accelerator or match_accelerator(gpu)
    if known:
        return known
    if gpu.device_id is not None:
        return f"device 0x{gpu.device_id:04x}"
    return gpu.arch or gpu.market_name or "unknown GPU"


def _rocm_value(node: NodeFacts) -> str:
    return node.facts.rocm_version or "not detected"


def _driver_value(node: NodeFacts) -> str:
    if node.facts.amdgpu_version:
        return node.facts.amdgpu_version
    if node.facts.gpus:
        return f"inbox (kernel {node.facts.kernel or '?'})"
    return "not detected"


def _digest_of(node: NodeFacts) -> str | None:
    return node.image_digest


def _version_of(node: NodeFacts) -> str | None:
    return node.engine_version


def _commit_of(node: NodeFacts) -> str | None:
    return node.model_commit


def _shown(value: Callable[[NodeFacts], str | None]) -> Callable[[NodeFacts], str]:
    """``value`` with an empty one (no repo digest, a local checkpoint) as ``unknown``."""
    return lambda node: value(node) or "unknown"


# The fix for each disagreement: {reference} is the value most nodes (the head on a tie)
# have, {have} the nodes with it, {odd} the others.
_GPU_HINT = (
    "every node needs the same GPUs ({reference} on {have}): replace {odd} with such a "
    "host, or deploy them as a stack of their own"
)
_ROCM_HINT = (
    "install ROCm {reference} on {odd} (as on {have}): RCCL and HIP must be the same "
    "release on every node"
)
_DRIVER_HINT = (
    "install amdgpu driver {reference} on {odd} (as on {have}; amdgpu-dkms from the "
    "matching ROCm repository), then reboot them"
)
_DIGEST_HINT = (
    "pin engine.image to one digest (name@{reference}, as on {have}) so every node pulls "
    "the same build; {odd} pulled another"
)
_VERSION_HINT = (
    "install engine version {reference} on {odd} (as on {have}): every node must run the "
    "same engine release"
)
_COMMIT_HINT = (
    "pin weights.revision to one commit (e.g. {reference}, staged on {have}) so {odd} "
    "stage the same snapshot"
)
