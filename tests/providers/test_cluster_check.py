"""ClusterCheck through amdfleet's provider plugin, on three real SSH hosts.

Each node's facts are what the real SshHost provider collected on it (the wiring the
program uses). The faults are real, and each keeps SSH to every host working, so only
the cluster check can see them:

* a firewall rule on the head (iptables in the head's own network namespace) drops TCP
  to the master port from one worker only: the deployer and the other worker still
  reach the head, so a check run from the deployer would pass; only the worker's own
  connect fails;
* a foreign process (a Python listener started over SSH) holds the master port on the
  head; the same process recorded as the stack's engine (its process group in
  ``<engine dir>/engine.pid``, as the process supervisor writes it) is instead the
  engine a later ``pulumi up`` must reach, not a failure;
* the stack names ``eth1`` for a node whose cluster address is on ``eth0``, and an RDMA
  device no lab host has.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from amdfleet.providers.cluster_check import ClusterCheck, ClusterCheckNode, ClusterCheckProps
from amdfleet.providers.ssh_host import SshHost, SshHostProps
from amdfleet.remote.cluster import engine_version_command
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.process import detached, stop_process_group
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.ssh import SshConnection
from amdfleet.remote.transport.target import HostTarget
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.pulumi_host import ProviderCallError, ProviderHost, resource_urn
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns
URN = resource_urn("cluster-check", ClusterCheck)

ENGINE_DIR = "/opt/amdfleet/cluster-test"
CPU = HostRequirement(accelerator="cpu", gpu_count=0, runtime="process", weights_dir="/opt")
HOLDER = (
    "import socket, sys, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(); time.sleep(300)"
)


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    lab = hostlab(3)
    require_netns(lab)
    return lab


@pytest.fixture(scope="module")
def facts(provider_host: ProviderHost, lab: HostLab) -> dict[str, dict[str, Any]]:
    """Each host's facts, collected by the real SshHost provider."""
    collected = {}
    for i, host in enumerate(lab):
        urn = provider_host.urn(f"cluster-{host.name}", SshHost)
        props = SshHostProps(host=lab.host_target(i), requirement=CPU).to_inputs()
        created = provider_host.create(provider_host.check(props, urn=urn).inputs, urn=urn)
        collected[host.name] = created.outputs["facts"]
    return collected


def _props(
    lab: HostLab,
    facts: dict[str, dict[str, Any]],
    port: int,
    *,
    interfaces: dict[str, str] | None = None,
    rdma: dict[str, tuple[str, ...]] | None = None,
    digests: dict[str, str] | None = None,
    wrong_key: str | None = None,
    version_command: str | None = None,
) -> dict[str, Any]:
    nodes = tuple(
        ClusterCheckNode(
            name=host.name,
            host=_target(lab, i, wrong_key),
            cluster_address=host.address,
            network_interface=(interfaces or {}).get(host.name),
            rdma_devices=(rdma or {}).get(host.name, ()),
        )
        for i, host in enumerate(lab)
    )
    props = ClusterCheckProps(
        nodes=nodes,
        ports={"master_port": port},
        engine_dir=ENGINE_DIR,
        connect_timeout_s=2,
        listen_timeout_s=30,
        engine_version_command=version_command,
    )
    inputs = props.to_inputs(facts=facts, image_digests=digests)
    return inputs


def _target(lab: HostLab, index: int, wrong_key: str | None) -> HostTarget:
    """The host's target; for ``wrong_key``, pinned to another host's key."""
    if lab[index].name != wrong_key:
        return lab.host_target(index)
    return lab.host_target(index).model_copy(update={"host_key": lab[index - 1].host_key})


def _listening(conn: SshConnection, port: int) -> bool:
    return bool(conn.run(f"ss -Hltn sport = :{port}", timeout=10).stdout.strip())


def _checks(outputs: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {c["node"]: c for c in outputs["checks"] if c["name"] == name}


def test_three_hosts_pass_and_their_interfaces_are_derived(
    provider_host: ProviderHost, lab: HostLab, facts: dict[str, dict[str, Any]]
) -> None:
    inputs = provider_host.check(_props(lab, facts, 29500), urn=URN).inputs
    created = provider_host.create(inputs, urn=URN)
    assert created.outputs["interfaces"] == {"host0": "eth0", "host1": "eth0", "host2": "eth0"}
    reached = _checks(created.outputs, "reach_head")
    head = lab[0].address
    for host in lab:  # every node reached the head's listener, from its own address
        assert reached[host.name]["ok"], reached
        assert reached[host.name]["detail"] == (
            f"reaches {head}:29500 (master_port), a test listener, from {host.address}"
        )
    assert all(c["ok"] for c in created.outputs["checks"])
    with lab.connect(0) as conn:  # the listener is gone: nothing left behind
        assert not _listening(conn, 29500)
    same = provider_host.diff(created.id, created.outputs, inputs, old_inputs=inputs, urn=URN)
    assert same.changes is False
    other = provider_host.check(_props(lab, facts, 29600), urn=URN).inputs
    diff = provider_host.diff(created.id, created.outputs, other, old_inputs=inputs, urn=URN)
    assert (diff.changes, diff.replaces) == (True, [])


@pytest.fixture
def firewalled(lab: HostLab) -> Iterator[str]:
    """The head drops TCP to port 29510 from host2 only."""
    rule = f"INPUT -p tcp -s {lab[2].address} --dport 29510 -j DROP"
    with lab.connect(0) as conn:
        conn.run(f"iptables -I {rule}", timeout=10)
        try:
            yield rule
        finally:
            conn.run(f"iptables -D {rule}", timeout=10)


def test_a_worker_the_head_firewalls_off_is_reported_from_that_worker(
    provider_host: ProviderHost, lab: HostLab, facts: dict[str, dict[str, Any]], firewalled: str
) -> None:
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(
            provider_host.check(_props(lab, facts, 29510), urn=URN).inputs, urn=URN
        )
    message = caught.value.message
    assert message.startswith("amdfleet.errors.PreflightError: cluster preflight failed:")
    head = lab[0].address
    assert (
        f"[host2] reach_head: cannot reach host0 at {head}:29510 (master_port), a test "
        "listener: timeout: no answer within 2 s"
    ) in message
    assert "hint: a firewall between host2 and host0 drops TCP 29510: allow it on host0" in message
    assert "[host1]" not in message and "[host0]" not in message  # they reached it
    assert message.count("  - [") == 1


def _start_holder(conn: SshConnection, port: int, *, as_engine: bool) -> None:
    command = f"exec python3 -c {shlex.quote(HOLDER)} {port}"
    if as_engine:
        layout = EngineLayout(ENGINE_DIR)
        conn.run(detached(command, layout.log, layout.pid), timeout=10)
    else:
        conn.run(detached(command, "/tmp/holder.log", "/tmp/holder.pid"), timeout=10)
    wait_until(lambda: _listening(conn, port), 10, f"a listener on port {port}")


def _holder_pid(conn: SshConnection, port: int) -> int:
    out = conn.run(f"ss -Hltnp sport = :{port}", timeout=10).stdout
    found = re.search(r"pid=(\d+)", out)
    assert found, out
    return int(found.group(1))


def test_a_port_held_by_a_foreign_process_names_it(
    provider_host: ProviderHost, lab: HostLab, facts: dict[str, dict[str, Any]]
) -> None:
    with lab.connect(0) as conn:
        _start_holder(conn, 29520, as_engine=False)
        try:
            pid = _holder_pid(conn, 29520)
            with pytest.raises(ProviderCallError) as caught:
                provider_host.create(
                    provider_host.check(_props(lab, facts, 29520), urn=URN).inputs, urn=URN
                )
        finally:
            conn.run(stop_process_group("/tmp/holder.pid", 2), timeout=10)
    message = caught.value.message
    head = lab[0].address
    assert (
        f"[host0] master_port: {head}:29520 is held by python3 (pid {pid}), not by this "
        "stack's engine"
    ) in message
    assert (
        f"hint: stop that process on host0 (kill {pid}) or set parallelism.master_port" in message
    )
    assert "reach_head" not in message  # nobody was sent to the foreign listener


def test_the_stacks_running_engine_is_reached_instead(
    provider_host: ProviderHost, lab: HostLab, facts: dict[str, dict[str, Any]]
) -> None:
    """A later ``pulumi up`` (create/update) and a ``pulumi refresh`` (read) while the
    engine serves: its port is the engine's, and every node reaches the engine."""
    layout = EngineLayout(ENGINE_DIR)
    with lab.connect(0) as conn:
        _start_holder(conn, 29530, as_engine=True)
        try:
            inputs = provider_host.check(_props(lab, facts, 29530), urn=URN).inputs
            created = provider_host.create(inputs, urn=URN)
            read = provider_host.read(created.id, created.outputs, inputs=inputs, urn=URN)
        finally:
            conn.run(stop_process_group(layout.pid, 2) + f"; rm -rf {ENGINE_DIR}", timeout=10)
    head = lab[0].address
    for outputs in (created.outputs, read.outputs):
        reached = _checks(outputs, "reach_head")
        assert sorted(reached) == ["host0", "host1", "host2"]
        for host in lab:
            assert reached[host.name]["detail"] == (
                f"reaches {head}:29530 (master_port), the running engine, from {host.address}"
            )
        assert all(c["ok"] for c in outputs["checks"])


def test_every_failure_of_every_node_is_listed_together(
    provider_host: ProviderHost, lab: HostLab, facts: dict[str, dict[str, Any]]
) -> None:
    """An interface mismatch (host1), a missing RDMA device and a host key that does not
    match (host2), and image digests that disagree: one error with each and its fix,
    while host0 and host1 still test reaching the head."""
    same, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    props = _props(
        lab,
        facts,
        29540,
        interfaces={"host0": "eth0", "host1": "eth1"},
        rdma={"host2": ("ionic_0",)},
        digests={"host0": same, "host1": same, "host2": other},
        wrong_key="host2",
    )
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(provider_host.check(props, urn=URN).inputs, urn=URN)
    message = caught.value.message
    failures = re.findall(r"^  - \[([\w-]+)\] (\w+):", message, re.M)
    assert failures == [
        ("cluster", "image_digest"),
        ("host1", "network_interface"),
        ("host2", "ssh"),
        ("host2", "rdma_devices"),
    ]
    assert message.count("hint: ") == 4
    assert (
        f"[cluster] image_digest: nodes disagree: host0, host1: {same}; host2: {other}" in message
    )
    assert f"pin engine.image to one digest (name@{same}, as on host0, host1)" in message
    assert (
        f"[host1] network_interface: the stack names eth1, but {lab[1].address} is on eth0; "
        "host1 has no eth1 (lo, eth0)"
    ) in message
    assert "hint: set network_interface of host host1 to 'eth0'" in message
    assert re.search(r"\[host2\] ssh: .*host key.*\n\s+hint: .*ssh-keyscan", message), message
    assert "[host2] rdma_devices: ionic_0 not found on host2 (`rdma link` lists: none)" in message
    assert "hint: load the NIC's RDMA driver on host2" in message


def test_engine_versions_are_read_on_each_node_and_compared(
    provider_host: ProviderHost, lab: HostLab, facts: dict[str, dict[str, Any]]
) -> None:
    """The real version command (the engine's Python asking importlib.metadata), against
    a ``vllm`` distribution installed per host (each host has its own /opt): 0.9.2 on
    host0 and host1, 0.8.5 on host2."""
    for i, version in enumerate(("0.9.2", "0.9.2", "0.8.5")):
        info = f"/opt/site/vllm-{version}.dist-info"
        with lab.connect(i) as conn:
            conn.run(
                f"rm -rf /opt/site && mkdir -p {info} && printf 'Metadata-Version: 2.1\\n"
                f"Name: vllm\\nVersion: {version}\\n' >{info}/METADATA",
                timeout=10,
            )
    command = "PYTHONPATH=/opt/site " + engine_version_command("python3", "vllm")
    try:
        with pytest.raises(ProviderCallError) as caught:
            provider_host.create(
                provider_host.check(
                    _props(lab, facts, 29550, version_command=command), urn=URN
                ).inputs,
                urn=URN,
            )
    finally:
        for i in range(len(lab)):
            with lab.connect(i) as conn:
                conn.run("rm -rf /opt/site", timeout=10)
    message = caught.value.message
    assert "[cluster] engine_version: nodes disagree: host0, host1: 0.9.2; host2: 0.8.5" in message
    assert "hint: install engine version 0.9.2 on host2 (as on host0, host1)" in message
    assert message.count("  - [") == 1
