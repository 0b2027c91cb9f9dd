"""Cluster reachability: whether every node reaches the head at each rendezvous port,
tested from the nodes themselves.

The head runs a short-lived TCP listener on its cluster address at each rendezvous port
(:func:`listener_command`), then every node connects to it (:func:`connect_command`). A
port the stack's own running engine already holds (a later ``pulumi up`` while the cluster
serves) is not taken over: the nodes connect to the engine's listener instead. A port held
by any other process is a failure naming that process. :func:`check_reachability` turns
what both printed into :class:`~amdfleet.findings.Finding` records.

Pure: command builders and parsers; the ClusterCheck provider
(:mod:`amdfleet.providers.cluster_check`) runs the commands over SSH. The programs
themselves are files in :mod:`amdfleet.remote.programs`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from amdfleet.addresses import host_port
from amdfleet.findings import Finding
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.programs import program

LISTEN_LIFETIME_S = 60.0
"""Longest a listener lives; the provider stops it as soon as every node has connected."""
CONNECT_TIMEOUT_S = 5.0
_LISTEN = "AMDFLEET_LISTEN"
_CONNECT = "AMDFLEET_CONNECT"
_RESOLVED = "AMDFLEET_RESOLVED"

# Port states a listener reports (``AMDFLEET_LISTEN <port> <state> ...``).
LISTENING = "listening"
"""The listener holds the port: nodes test reaching it."""
ENGINE = "engine"
"""This stack's running engine holds the port: nodes test reaching the engine."""
FOREIGN = "foreign"
"""Another process holds the port (``pid`` 0 when ``ss`` could not name it)."""
FREE = "free"
"""Nobody listens (probe mode only: the listener binds nothing)."""
UNAVAILABLE = "unavailable"
"""The address is not one of the head's (EADDRNOTAVAIL)."""
ERROR = "error"
"""Any other failure to bind or resolve."""
TESTABLE = frozenset({LISTENING, ENGINE})

_LISTENER_PY = program("cluster_listener.py")
_CONNECT_PY = program("cluster_connect.py")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PortState:
    """One rendezvous port as the head's listener found it."""

    port: int
    state: str
    pid: int = 0
    process: str = ""
    message: str = ""

    @property
    def holder(self) -> str:
        """``python3 (pid 123)``, or a phrase saying ``ss`` could not tell."""
        if self.pid:
            return f"{self.process or '?'} (pid {self.pid})"
        return "a process `ss -ltnp` could not name (it needs root to see other users')"


@dataclass(frozen=True)
class ListenerReport:
    """What :func:`listener_command` printed: its pid once every port was set up,
    each port's state, and the peers it accepted per port."""

    pid: int | None = None
    ports: Mapping[int, PortState] = field(default_factory=dict)
    accepted: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    error: str = ""
    """Why the listener did not run (set by the caller from the command's result)."""

    @property
    def ready(self) -> bool:
        """Whether the listener got as far as setting up every port."""
        return self.pid is not None

    def testable(self) -> tuple[int, ...]:
        """Ports the nodes should connect to (held by the listener or the engine)."""
        return tuple(p for p, s in self.ports.items() if s.state in TESTABLE)


@dataclass(frozen=True)
class ConnectResult:
    """One connection attempt from a node: ``kind`` is ``ok``, ``timeout``, ``refused``,
    ``unreachable``, ``resolve`` or ``error``; ``local`` the node's source address."""

    port: int
    kind: str
    local: str = ""
    message: str = ""


@dataclass(frozen=True)
class ConnectReport:
    """What :func:`connect_command` printed on one node."""

    resolved: tuple[str, ...] = ()
    results: Mapping[int, ConnectResult] = field(default_factory=dict)
    error: str = ""
    """Why the command failed (set by the caller from the command's result)."""


# ------------------------------------------------------------------- commands


def rendezvous_ports(backend: str, master_port: int, ray_port: int) -> dict[str, int]:
    """The head ports every node must reach, by the stack field that sets them."""
    ports = {"master_port": master_port}
    if backend == "ray":
        ports["ray_port"] = ray_port
    return ports


def listener_command(
    address: str,
    ports: Sequence[int],
    *,
    layout: EngineLayout,
    expected: int,
    container: str | None = None,
    bind: bool = True,
    lifetime_s: float = LISTEN_LIFETIME_S,
) -> str:
    """The head's listener: the host's ``python3``, standard library only.

    For each port it binds ``address`` (a host name is resolved on the head) and listens;
    a port already in use is reported with its holder from ``ss -ltnp``, as the stack's
    own engine when the holder (or an ancestor) is in the process group recorded in
    ``layout.pid``, or (docker runtime) lives in ``container``'s PID namespace. Once
    every port is set up it prints ``AMDFLEET_LISTEN ready <pid>``, then one
    ``accepted`` line per connection (closed at once, nothing sent), and exits when
    every held port has had ``expected`` connections, after ``lifetime_s`` seconds, or
    on SIGTERM (:func:`stop_listener_command`). Without ``bind`` it binds nothing and
    only reports each port's holder (``free`` when there is none).
    """
    container_pid = (
        f'"$(docker inspect -f {{{{.State.Pid}}}} {shlex.quote(container)} 2>/dev/null || echo 0)"'
        if container
        else "0"
    )
    words = [
        shlex.quote(address),
        f"{lifetime_s:g}",
        str(expected),
        shlex.quote(layout.pid),
        container_pid,
        "bind" if bind else "probe",
        *(str(int(p)) for p in ports),
    ]
    return f"python3 -c {shlex.quote(_LISTENER_PY)} {' '.join(words)}"


def stop_listener_command(pid: int) -> str:
    """Stop a listener early (every node has tried); harmless if it already exited."""
    return f"kill -TERM {int(pid)} 2>/dev/null; true"


def parse_listener(output: str) -> ListenerReport:
    """Parse :func:`listener_command`'s output (complete or partial)."""
    pid: int | None = None
    ports: dict[int, PortState] = {}
    accepted: dict[int, list[str]] = {}
    for words in _tagged(output, _LISTEN):
        if words[0] == "ready" and len(words) > 1 and words[1].isdigit():
            pid = int(words[1])
        elif words[0].isdigit() and len(words) > 1:
            port = int(words[0])
            if words[1] == "accepted":
                accepted.setdefault(port, []).append(words[2] if len(words) > 2 else "?")
            else:
                ports[port] = _port_state(port, words[1:])
    return ListenerReport(pid, ports, {p: tuple(a) for p, a in accepted.items()})


def connect_command(
    head_address: str,
    ports: Sequence[int],
    *,
    own_address: str,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> str:
    """What each node runs: resolve its own cluster address (``AMDFLEET_RESOLVED <ip>``
    lines), then connect to the head at each port in turn, with ``timeout_s`` each,
    closing at once without sending anything (the port may be the running engine's)."""
    words = [
        shlex.quote(head_address),
        f"{timeout_s:g}",
        shlex.quote(own_address),
        *(str(int(p)) for p in ports),
    ]
    return f"python3 -c {shlex.quote(_CONNECT_PY)} {' '.join(words)}"


def parse_connect(output: str) -> ConnectReport:
    """Parse :func:`connect_command`'s output."""
    resolved = tuple(dict.fromkeys(w[0] for w in _tagged(output, _RESOLVED)))
    results: dict[int, ConnectResult] = {}
    for words in _tagged(output, _CONNECT):
        if len(words) >= 2 and words[0].isdigit():
            port, kind, rest = int(words[0]), words[1], " ".join(words[2:])
            local = rest if kind == "ok" else ""
            results[port] = ConnectResult(port, kind, local, "" if kind == "ok" else rest)
    return ConnectReport(resolved, results)


def check_reachability(
    head: str,
    head_address: str,
    ports: Mapping[str, int],
    listener: ListenerReport,
    connects: Mapping[str, ConnectReport],
) -> list[Finding]:
    """Findings about the head's ports (held by another process, address not the
    head's, listener failed) and, per node in ``connects``, about reaching each port
    the nodes tested."""
    fields_by_port = {port: name for name, port in ports.items()}
    findings = _port_findings(head, head_address, fields_by_port, listener)
    for node, report in connects.items():
        if report.error and listener.testable():
            findings.append(_untested(node, head, report.error))
            continue
        for port in listener.testable():
            result = report.results.get(port, ConnectResult(port, "error", message="no result"))
            target = _Target(head, head_address, port, fields_by_port.get(port, "port"))
            findings.append(_reach_finding(node, target, result, listener.ports[port]))
    return findings


# -------------------------------------------------------------------- helpers


def _tagged(output: str, tag: str) -> list[list[str]]:
    """The words after ``tag`` on each line that starts with it."""
    return [
        words[1:]
        for line in output.splitlines()
        if len(words := line.split()) > 1 and words[0] == tag
    ]


def _port_state(port: int, words: Sequence[str]) -> PortState:
    state = words[0]
    if state in (ENGINE, FOREIGN):
        pid = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
        return PortState(port, state, pid, " ".join(words[2:]))
    return PortState(port, state, message=" ".join(words[1:]))


def _port_findings(
    head: str, address: str, fields_by_port: Mapping[int, str], listener: ListenerReport
) -> list[Finding]:
    if not listener.ready:
        why = f": {listener.error}" if listener.error else ""
        return [
            Finding(
                head,
                "rendezvous",
                False,
                f"the test listener on {address} did not start{why}",
                f"{head} needs python3 (sudo apt-get install -y python3) and ss (iproute2)",
            )
        ]
    findings = []
    unavailable = [p for p, s in listener.ports.items() if s.state == UNAVAILABLE]
    if unavailable:
        findings.append(_unavailable_finding(head, address, unavailable))
    for port, state in listener.ports.items():
        name = fields_by_port.get(port, "port")
        where = host_port(address, port)
        if state.state == FOREIGN:
            findings.append(_foreign_finding(head, name, where, state))
        elif state.state == ERROR:
            findings.append(
                Finding(
                    head,
                    name,
                    False,
                    f"cannot listen on {where}: {state.message}",
                    f"check the address and port on {head}, or set parallelism.{name} to "
                    "another port",
                )
            )
    return findings


def _unavailable_finding(head: str, address: str, ports: Sequence[int]) -> Finding:
    listed = ", ".join(str(p) for p in ports)
    return Finding(
        head,
        "rendezvous",
        False,
        f"cannot listen on {address} (port {listed}): it is not an address of {head}",
        f"set private_address of host {head} to one of {head}'s own addresses that the "
        "other nodes reach",
    )


def _foreign_finding(head: str, name: str, where: str, state: PortState) -> Finding:
    port = where.rsplit(":", 1)[1]
    stop = f"kill {state.pid}" if state.pid else f"sudo ss -ltnp 'sport = :{port}' names it"
    return Finding(
        head,
        name,
        False,
        f"{where} is held by {state.holder}, not by this stack's engine",
        f"stop that process on {head} ({stop}) or set parallelism.{name} to a free port",
    )


def _untested(node: str, head: str, error: str) -> Finding:
    return Finding(
        node,
        "reach_head",
        False,
        f"could not test reaching {head}: {error}",
        f"{node} needs python3 (sudo apt-get install -y python3)",
    )


@dataclass(frozen=True)
class _Target:
    head: str
    address: str
    port: int
    field: str

    def __str__(self) -> str:
        return f"{host_port(self.address, self.port)} ({self.field})"


def _reach_finding(node: str, target: _Target, result: ConnectResult, state: PortState) -> Finding:
    held = "the running engine" if state.state == ENGINE else "a test listener"
    if result.kind == "ok":
        detail = f"reaches {target}, {held}, from {result.local}"
        return Finding(node, "reach_head", True, detail)
    detail = f"cannot reach {target.head} at {target}, {held}: {result.kind}: {result.message}"
    return Finding(node, "reach_head", False, detail, _reach_hint(node, target, result))


def _reach_hint(node: str, target: _Target, result: ConnectResult) -> str:
    head, address, port = target.head, target.address, target.port
    if result.kind in ("timeout", "refused"):
        verb = "drops" if result.kind == "timeout" else "rejects"
        return (
            f"a firewall between {node} and {head} {verb} TCP {port}: allow it on {head} "
            f"(e.g. sudo iptables -I INPUT -p tcp --dport {port} -j ACCEPT, or the cloud's "
            f"security group), and check the route on {node}: ip route get {address}"
        )
    if result.kind == "unreachable":
        return f"{node} has no route to {address}: check `ip route get {address}` on {node}"
    if result.kind == "resolve":
        return f"{node} cannot resolve {address}: use an IP address or fix DNS on {node}"
    return f"check that {node} can open TCP connections to {host_port(address, port)}"
