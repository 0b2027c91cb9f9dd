"""Cluster preflight: what every node of a multi-node engine must share, and whether each
node reaches the head, tested from the nodes themselves.

Pure, like the rest of :mod:`amdfleet.remote`: command builders, parsers of what those
commands print, and checks over facts already collected. The ClusterCheck provider
(:mod:`amdfleet.providers.cluster_check`) runs the commands over SSH.

Checks (each a :class:`ClusterFinding`, passing or not; a failing one has a fix):

* agreement across nodes (:func:`check_agreement`): GPU model and count, ROCm release,
  amdgpu driver, and when known the engine image digest (docker runtime) or engine
  version (process runtime) and the staged model commit. A mismatch names which nodes
  have which value.
* each node's network (:func:`check_network`): the interface carrying the node's cluster
  address (:func:`collective_interface`, the interface collective traffic must use)
  against the one the stack names, its link state, and the RDMA devices the stack names.
* reachability (:func:`check_reachability`): the head runs a short-lived TCP listener on
  its cluster address at each rendezvous port (:func:`listener_command`), then every
  node connects to it (:func:`connect_command`). A port the stack's own running engine
  already holds (a later ``pulumi up`` while the cluster serves) is not taken over: the
  nodes connect to the engine's listener instead. A port held by any other process is a
  failure naming that process.

:func:`raise_for_failures` raises one :class:`~amdfleet.errors.PreflightError` listing
every failure of every node.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from amdfleet.addresses import host_port
from amdfleet.errors import PreflightError
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.facts.gpus import match_accelerator
from amdfleet.remote.facts.records import GpuFacts, HostFacts

CLUSTER = "cluster"
"""The ``node`` of a finding about all nodes together (an agreement check)."""
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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ClusterFinding:
    """One check: about one node (``node`` is its name) or about all (:data:`CLUSTER`).
    ``hint`` says how to fix it when ``ok`` is False."""

    node: str
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


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


@dataclass(frozen=True)
class ClusterReport:
    """The result of the cluster preflight: each node's collective interface (None when
    no interface carries its cluster address) and every finding."""

    interfaces: Mapping[str, str | None]
    findings: tuple[ClusterFinding, ...]

    @property
    def failures(self) -> tuple[ClusterFinding, ...]:
        """The findings that did not pass."""
        return tuple(f for f in self.findings if not f.ok)


def raise_for_failures(report: ClusterReport) -> None:
    """Raise :class:`PreflightError` listing every failure of every node, if any."""
    if report.failures:
        failures = [(f.node, f"{f.name}: {f.detail}", f.hint) for f in report.failures]
        raise PreflightError(failures, heading="cluster preflight failed")


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


def check_network(node: NodeFacts) -> tuple[str | None, list[ClusterFinding]]:
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


def check_agreement(nodes: Sequence[NodeFacts]) -> list[ClusterFinding]:
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


# --------------------------------------------------------------- reachability


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


def engine_version_command(python: str, distribution: str) -> str:
    """Print the installed version of the engine's Python ``distribution`` with the
    engine's own ``python`` (process runtime)."""
    script = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return f"{shlex.quote(python)} -c {shlex.quote(script)} {shlex.quote(distribution)}"


def parse_engine_version(output: str) -> str | None:
    """The version :func:`engine_version_command` printed (its last non-empty line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else None


def check_reachability(
    head: str,
    head_address: str,
    ports: Mapping[str, int],
    listener: ListenerReport,
    connects: Mapping[str, ConnectReport],
) -> list[ClusterFinding]:
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


# ----------------------------------------------------------------- the scripts

_LISTENER_PY = r"""
import errno, os, re, selectors, signal, socket, subprocess, sys, time
address, lifetime, expected, pid_file, container_pid, mode = sys.argv[1:7]
ports = [int(p) for p in sys.argv[7:]]
lifetime, expected, container_pid = float(lifetime), int(expected), int(container_pid or 0)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def say(*words):
    print("AMDFLEET_LISTEN", *words, flush=True)
def holder(port):
    try:
        out = subprocess.run(["ss", "-Hltnp", "sport", "=", ":%d" % port],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'users:\(\("(.*?)",pid=(\d+)', out)
    if found:
        return int(found.group(2)), found.group(1)
    return (0, "") if out.strip() else None
def parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
def pid_ns(pid):
    try:
        return os.readlink("/proc/%d/ns/pid" % pid)
    except OSError:
        return None
def engine_group():
    try:
        with open(pid_file) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
def is_engine(pid):
    group, p = engine_group(), pid
    while group is not None and p > 1:
        try:
            if os.getpgid(p) == group:
                return True
        except OSError:
            break
        p = parent(p)
    ns = pid_ns(container_pid) if container_pid > 0 else None
    return ns is not None and ns != pid_ns(os.getpid()) and ns == pid_ns(pid)
def report_holder(port, bound_failed):
    found = holder(port)
    if found is None:
        if bound_failed:
            say(port, "foreign", 0, "")
        else:
            say(port, "free")
    elif found[0] and is_engine(found[0]):
        say(port, "engine", found[0], found[1])
    else:
        say(port, "foreign", found[0], found[1])
socks = {}
for port in ports:
    if mode != "bind":
        report_holder(port, False)
        continue
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        say(port, "error", e.strerror or e)
        continue
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(64)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            report_holder(port, True)
        else:
            say(port, "unavailable" if e.errno == errno.EADDRNOTAVAIL else "error", e.strerror or e)
        continue
    sock.setblocking(False)
    socks[port] = sock
    say(port, "listening")
say("ready", os.getpid())
selector = selectors.DefaultSelector()
for port, sock in socks.items():
    selector.register(sock, selectors.EVENT_READ, port)
counts = dict.fromkeys(socks, 0)
deadline = time.monotonic() + lifetime
while counts and min(counts.values()) < expected and time.monotonic() < deadline:
    for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
        try:
            conn, peer = key.fileobj.accept()
        except OSError:
            continue
        conn.close()
        counts[key.data] += 1
        say(key.data, "accepted", peer[0])
"""

_CONNECT_PY = r"""
import errno, socket, sys
head, timeout, own = sys.argv[1], float(sys.argv[2]), sys.argv[3]
try:
    for info in socket.getaddrinfo(own, None, 0, socket.SOCK_STREAM):
        print("AMDFLEET_RESOLVED", info[4][0])
except OSError:
    pass
for port in [int(p) for p in sys.argv[4:]]:
    try:
        sock = socket.create_connection((head, port), timeout)
    except socket.timeout:
        print("AMDFLEET_CONNECT", port, "timeout", "no answer within %g s" % timeout)
    except ConnectionRefusedError as e:
        print("AMDFLEET_CONNECT", port, "refused", e.strerror or e)
    except socket.gaierror as e:
        print("AMDFLEET_CONNECT", port, "resolve", e.strerror or e)
    except OSError as e:
        kind = "unreachable" if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
        print("AMDFLEET_CONNECT", port, kind, e.strerror or e)
    else:
        print("AMDFLEET_CONNECT", port, "ok", sock.getsockname()[0])
        sock.close()
    sys.stdout.flush()
"""


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


def _interface_finding(node: NodeFacts, found: str | None) -> ClusterFinding:
    named, address = node.network_interface, node.cluster_address
    shown = address if node.ips in ((), (address,)) else f"{address} ({', '.join(node.ips)})"
    if found is None:
        return ClusterFinding(
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
        return ClusterFinding(
            node.name,
            "network_interface",
            False,
            f"the stack names {named}, but {shown} is on {found}{exists}",
            f"set network_interface of host {node.name} to {found!r}, or remove it: amdfleet "
            "uses the interface that carries the node's cluster address",
        )
    if state.upper() == "DOWN":
        return ClusterFinding(
            node.name,
            "network_interface",
            False,
            f"{found}, which carries {shown}, is down",
            f"bring it up on {node.name}: sudo ip link set {found} up (and check its cable "
            "or switch port)",
        )
    return ClusterFinding(node.name, "network_interface", True, f"{shown} is on {found}")


def _rdma_finding(node: NodeFacts) -> ClusterFinding:
    present = node.facts.rdma_devices
    missing = [d for d in node.rdma_devices if d not in present]
    if not missing:
        named = ", ".join(node.rdma_devices)
        return ClusterFinding(node.name, "rdma_devices", True, f"{named} present")
    has = ", ".join(present) or "none"
    return ClusterFinding(
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
) -> ClusterFinding:
    groups: dict[str, list[str]] = {}
    for node in nodes:
        groups.setdefault(value(node), []).append(node.name)
    if len(groups) == 1:
        [(shared, members)] = groups.items()
        return ClusterFinding(CLUSTER, name, True, f"all {len(members)} node(s): {shared}")
    counts = Counter({v: len(m) for v, m in groups.items()})
    top = max(counts.values())
    reference = next(v for v in groups if counts[v] == top)  # first seen: the head's on a tie
    odd = [n for v, members in groups.items() if v != reference for n in members]
    detail = "nodes disagree: " + "; ".join(f"{', '.join(m)}: {v}" for v, m in groups.items())
    fix = hint.format(reference=reference, have=", ".join(groups[reference]), odd=", ".join(odd))
    return ClusterFinding(CLUSTER, name, False, detail, fix)


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


# ---------------------------------------------------------- reachability helpers


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
) -> list[ClusterFinding]:
    if not listener.ready:
        why = f": {listener.error}" if listener.error else ""
        return [
            ClusterFinding(
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
                ClusterFinding(
                    head,
                    name,
                    False,
                    f"cannot listen on {where}: {state.message}",
                    f"check the address and port on {head}, or set parallelism.{name} to "
                    "another port",
                )
            )
    return findings


def _unavailable_finding(head: str, address: str, ports: Sequence[int]) -> ClusterFinding:
    listed = ", ".join(str(p) for p in ports)
    return ClusterFinding(
        head,
        "rendezvous",
        False,
        f"cannot listen on {address} (port {listed}): it is not an address of {head}",
        f"set private_address of host {head} to one of {head}'s own addresses that the "
        "other nodes reach",
    )


def _foreign_finding(head: str, name: str, where: str, state: PortState) -> ClusterFinding:
    port = where.rsplit(":", 1)[1]
    stop = f"kill {state.pid}" if state.pid else f"sudo ss -ltnp 'sport = :{port}' names it"
    return ClusterFinding(
        head,
        name,
        False,
        f"{where} is held by {state.holder}, not by this stack's engine",
        f"stop that process on {head} ({stop}) or set parallelism.{name} to a free port",
    )


def _untested(node: str, head: str, error: str) -> ClusterFinding:
    return ClusterFinding(
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


def _reach_finding(
    node: str, target: _Target, result: ConnectResult, state: PortState
) -> ClusterFinding:
    held = "the running engine" if state.state == ENGINE else "a test listener"
    if result.kind == "ok":
        detail = f"reaches {target}, {held}, from {result.local}"
        return ClusterFinding(node, "reach_head", True, detail)
    detail = f"cannot reach {target.head} at {target}, {held}: {result.kind}: {result.message}"
    return ClusterFinding(node, "reach_head", False, detail, _reach_hint(node, target, result))


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
