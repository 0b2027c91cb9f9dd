"""Cluster reachability, pure parts: the listener and connect commands, their parsers and
the findings built from them.

The listener and connect commands run for real on this machine's loopback (nothing else
is reachable here); the lab-host runs are in tests/providers/test_cluster_check.py.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.reachability import (
    ConnectReport,
    ConnectResult,
    ListenerReport,
    PortState,
    check_reachability,
    connect_command,
    listener_command,
    parse_connect,
    parse_listener,
    rendezvous_ports,
)
from tests.support.ports import free_port


def test_rendezvous_ports() -> None:
    assert rendezvous_ports("mp", 29500, 6379) == {"master_port": 29500}
    assert rendezvous_ports("ray", 29500, 6380) == {"master_port": 29500, "ray_port": 6380}


LAYOUT = EngineLayout("/opt/amdfleet/unit-test")


def run(command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)


def test_listener_and_connect_on_loopback() -> None:
    """The real commands: the listener holds two ports, a node connects to both and to
    a third nobody listens on; the listener exits by itself once each port had its one
    expected connection."""
    ports = [free_port(), free_port()]
    closed = free_port()
    listener = subprocess.Popen(
        [
            "sh",
            "-c",
            listener_command("127.0.0.1", ports, layout=LAYOUT, expected=1, lifetime_s=30),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None
    head = [listener.stdout.readline() for _ in range(3)]  # each port, then ready
    assert parse_listener("".join(head)).testable() == tuple(ports)
    connected = run(
        connect_command("127.0.0.1", [*ports, closed], own_address="localhost", timeout_s=5)
    )
    out, _ = listener.communicate(timeout=30)
    assert listener.returncode == 0
    report = parse_connect(connected.stdout)
    assert "127.0.0.1" in report.resolved
    assert [(r.port, r.kind, r.local) for r in report.results.values()] == [
        (ports[0], "ok", "127.0.0.1"),
        (ports[1], "ok", "127.0.0.1"),
        (closed, "refused", ""),
    ]
    parsed = parse_listener("".join(head) + out)
    assert parsed.accepted == {ports[0]: ("127.0.0.1",), ports[1]: ("127.0.0.1",)}


def test_a_port_held_by_another_process_is_named() -> None:
    port = free_port()
    script = (
        "import socket, sys; s = socket.socket(); s.bind(('0.0.0.0', int(sys.argv[1]))); "
        "s.listen(); print('up', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        bound = parse_listener(
            run(listener_command("127.0.0.1", [port], layout=LAYOUT, expected=1)).stdout
        )
        probed = parse_listener(
            run(listener_command("127.0.0.1", [port], layout=LAYOUT, expected=1, bind=False)).stdout
        )
    finally:
        holder.communicate(timeout=10)
    for report in (bound, probed):
        state = report.ports[port]
        assert (state.state, state.pid) == ("foreign", holder.pid)
        assert state.process.startswith("python")
        assert report.testable() == ()


def test_an_address_the_head_does_not_have_is_unavailable() -> None:
    port = free_port()
    report = parse_listener(
        run(listener_command("192.0.2.77", [port], layout=LAYOUT, expected=1)).stdout
    )
    assert report.ready
    assert report.ports[port] == PortState(
        port, "unavailable", message="Cannot assign requested address"
    )


def test_probe_mode_binds_nothing() -> None:
    port = free_port()
    report = parse_listener(
        run(listener_command("127.0.0.1", [port], layout=LAYOUT, expected=1, bind=False)).stdout
    )
    assert report.ports[port].state == "free"


def test_parsers_survive_partial_and_foreign_output() -> None:
    assert parse_listener("") == ListenerReport()
    assert not parse_listener("AMDFLEET_LISTEN 29500 listening\n").ready
    assert parse_listener("AMDFLEET_LISTEN 29500 foreign 0 \nAMDFLEET_LISTEN ready 7\n").ports[
        29500
    ] == PortState(29500, "foreign")
    assert parse_connect("sh: 1: python3: not found\n") == ConnectReport()
    assert parse_connect("AMDFLEET_CONNECT 29500 timeout no answer within 5 s\n").results[
        29500
    ] == ConnectResult(29500, "timeout", "", "no answer within 5 s")


HEAD = "host0"
PORTS = {"master_port": 29500, "ray_port": 6379}


def test_reachability_findings() -> None:
    listener = ListenerReport(
        pid=42,
        ports={
            29500: PortState(29500, "listening"),
            6379: PortState(6379, "foreign", 4242, "redis-server"),
        },
    )
    connects = {
        "host0": ConnectReport(("10.0.0.1",), {29500: ConnectResult(29500, "ok", "10.0.0.1")}),
        "host1": ConnectReport(results={29500: ConnectResult(29500, "ok", "10.0.0.2")}),
        "host2": ConnectReport(
            results={29500: ConnectResult(29500, "timeout", message="no answer within 5 s")}
        ),
    }
    findings = check_reachability(HEAD, "10.0.0.1", PORTS, listener, connects)
    issues = {(f.subject, f.check): f for f in findings if not f.ok}
    assert set(issues) == {("host0", "ray_port"), ("host2", "reach_head")}
    held = issues[("host0", "ray_port")]
    assert (
        held.detail
        == "10.0.0.1:6379 is held by redis-server (pid 4242), not by this stack's engine"
    )
    assert (
        held.hint
        == "stop that process on host0 (kill 4242) or set parallelism.ray_port to a free port"
    )
    unreached = issues[("host2", "reach_head")]
    assert unreached.detail == (
        "cannot reach host0 at 10.0.0.1:29500 (master_port), a test listener: timeout: "
        "no answer within 5 s"
    )
    assert "a firewall between host2 and host0 drops TCP 29500" in unreached.hint
    assert "ip route get 10.0.0.1" in unreached.hint
    passed = [f.detail for f in findings if f.ok]
    assert "reaches 10.0.0.1:29500 (master_port), a test listener, from 10.0.0.2" in passed


def test_the_running_engines_port_is_reached_not_reported() -> None:
    listener = ListenerReport(pid=7, ports={29500: PortState(29500, "engine", 900, "python3")})
    connects = {"w": ConnectReport(results={29500: ConnectResult(29500, "ok", "10.0.0.2")})}
    [finding] = check_reachability(HEAD, "fd00::1", {"master_port": 29500}, listener, connects)
    assert finding.ok
    assert (
        finding.detail == "reaches [fd00::1]:29500 (master_port), the running engine, from 10.0.0.2"
    )


def test_a_listener_that_did_not_start_and_a_node_that_could_not_test() -> None:
    dead = replace(ListenerReport(), error="exit 127: sh: 1: python3: not found")
    [finding] = check_reachability(HEAD, "10.0.0.1", PORTS, dead, {"w": ConnectReport()})
    assert finding.detail.endswith("did not start: exit 127: sh: 1: python3: not found")
    assert "python3" in finding.hint
    ready = ListenerReport(pid=1, ports={29500: PortState(29500, "listening")})
    broken = {"w": ConnectReport(error="exit 127: python3: not found")}
    [finding] = check_reachability(HEAD, "10.0.0.1", PORTS, ready, broken)
    assert (finding.subject, finding.ok, finding.detail) == (
        "w",
        False,
        "could not test reaching host0: exit 127: python3: not found",
    )
