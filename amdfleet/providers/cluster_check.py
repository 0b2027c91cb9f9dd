"""ClusterCheck: the cluster preflight of a multi-node engine, before anything starts.

Given every node's facts (the SshHost outputs), and when known its image digest
(EngineImage) and staged model commit (ModelWeights), ``create`` connects to every node
at once and checks (:mod:`amdfleet.remote.cluster`):

* that all nodes agree on GPU model and count, ROCm, amdgpu driver, image digest or
  engine version (process runtime: the engine's Python reports its distribution's
  version on each node), and model commit;
* on each node, which interface carries its cluster address (the interface collective
  traffic must use; output ``interfaces``), against the stack's ``network_interface``,
  and that the RDMA devices the stack names exist;
* that every node reaches the head's rendezvous ports, tested from the nodes: the head
  runs a short-lived listener on its cluster address and each node connects to it. A
  port the stack's own running engine holds is tested by connecting to the engine; a
  port held by another process is a failure naming it.

It fails with one :class:`~amdfleet.errors.PreflightError` listing every failure of
every node with a fix. It changes nothing on any host (the listener lives at most
:data:`~amdfleet.remote.reachability.LISTEN_LIFETIME_S` and is stopped as soon as every node
has tried). ``read`` (``pulumi refresh``) re-runs every check but starts no listener:
it only connects to ports the stack's engine holds, so a refresh never takes a port the
engine is about to bind, and it records the checks without failing. ``delete`` has
nothing to remove.

Progress (:mod:`amdfleet.providers.progress`): each phase shows on the resource's line;
a passed check leaves a note with the interfaces and what was reached.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Self, TypeVar

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from amdfleet.errors import AmdFleetError, PropsError, RemoteError
from amdfleet.findings import Finding, config_issue
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.cluster import (
    CLUSTER,
    ClusterReport,
    NodeFacts,
    check_agreement,
    check_network,
    parse_engine_version,
    raise_for_failures,
)
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.facts import HostFacts
from amdfleet.remote.reachability import (
    CONNECT_TIMEOUT_S,
    LISTEN_LIFETIME_S,
    ConnectReport,
    ListenerReport,
    check_reachability,
    connect_command,
    listener_command,
    parse_connect,
    parse_listener,
    stop_listener_command,
)
from amdfleet.remote.transport.connection import CommandResult, Connection
from amdfleet.remote.transport.fanout import fan_out
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

INPUTS = (
    "nodes",
    "ports",
    "engine_dir",
    "container",
    "engine_version_command",
    "connect_timeout_s",
    "listen_timeout_s",
    "facts",
    "image_digests",
    "model_commits",
)
_COMMAND_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0
_T = TypeVar("_T")


class ClusterCheckNode(BaseModel):
    """One node as the cluster preflight sees it (rank order: the head first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The node's name (its host's label in the stack).")
    host: HostTarget = Field(description="How to reach the node.")
    cluster_address: str = Field(description="The address other nodes reach this one at.")
    network_interface: str | None = Field(
        None, description="The interface the stack names for collective traffic, if any."
    )
    rdma_devices: tuple[str, ...] = Field((), description="RDMA devices the stack names.")


class ClusterCheckProps(ProviderProps):
    """ClusterCheck's properties: the nodes and what they must share (inputs), each
    node's collective interface and every check (outputs)."""

    nodes: tuple[ClusterCheckNode, ...] = Field(
        min_length=1, description="Every node, the head (rank 0) first."
    )
    ports: dict[str, int] = Field(
        description="The head's rendezvous ports every node must reach, by stack field "
        "(master_port; ray_port for Ray)."
    )
    engine_dir: str = Field(description="The stack's engine directory (holds engine.pid).")
    container: str | None = Field(
        None, description="The engine's container name (docker runtime), to recognise it."
    )
    engine_version_command: str | None = Field(
        None, description="Prints the engine's version on a node (process runtime)."
    )
    connect_timeout_s: float = Field(
        CONNECT_TIMEOUT_S, gt=0, description="Time limit of each node's connect to the head."
    )
    listen_timeout_s: float = Field(
        LISTEN_LIFETIME_S, gt=0, description="Longest the head's test listener lives."
    )
    facts: dict[str, dict[str, Any]] | None = Field(
        None, description="Each node's HostFacts (an SshHost's facts), by node name."
    )
    image_digests: dict[str, str] | None = Field(
        None, description="Each node's engine image digest, by node name (docker runtime)."
    )
    model_commits: dict[str, str] | None = Field(
        None, description="Each node's staged model commit, by node name."
    )
    interfaces: dict[str, str | None] | None = Field(
        None, description="Output: each node's collective interface (None: none found)."
    )
    checks: list[dict[str, Any]] | None = Field(
        None, description="Output: every check (node, name, ok, detail, hint)."
    )

    @field_validator("engine_dir")
    @classmethod
    def _engine_dir(cls, value: str) -> str:
        EngineLayout(value)  # raises ValueError naming the rule
        return value

    @model_validator(mode="after")
    def _one_value_per_node(self) -> Self:
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {', '.join(names)}")
        for label in ("facts", "image_digests", "model_commits"):
            given: dict[str, Any] | None = getattr(self, label)
            if given is not None and sorted(given) != sorted(names):
                raise ValueError(
                    f"{label} must have one entry per node ({', '.join(names)}), "
                    f"got {', '.join(sorted(given)) or 'none'}"
                )
        return self

    @property
    def head(self) -> ClusterCheckNode:
        """The rank-0 node, which runs the rendezvous."""
        return self.nodes[0]


class ClusterCheckProvider(ResourceProvider):
    """Runs the cluster preflight. Stateless; leaves nothing behind on any host."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Run every check. Raises PreflightError listing every failure of every node
        (including nodes that could not be reached over SSH), each with a fix. Idempotent."""
        p = ClusterCheckProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            outs = _check(p, progress, bind=True, enforce=True)
        return CreateResult(id_="-".join(n.name for n in p.nodes), outs=outs)

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-run the checks without a listener (only ports the running engine holds are
        reached); records them, never fails on them."""
        p = ClusterCheckProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            return ReadResult(id_=id_, outs=_check(p, progress, bind=False, enforce=False))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Any changed input re-runs the checks in place (nothing to replace). Compares
        raw values (``news`` may hold unknowns during preview)."""
        changes = changed_keys(olds, news, INPUTS)
        return DiffResult(changes=bool(changes), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Run every check again, as :meth:`create`."""
        p = ClusterCheckProps.from_inputs(news)
        with ResourceProgress.for_resource(news) as progress:
            return UpdateResult(outs=_check(p, progress, bind=True, enforce=True))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove: the checks leave nothing on the hosts."""


class ClusterCheck(
    AmdFleetResource, name="ClusterCheck", provider=ClusterCheckProvider, props=ClusterCheckProps
):
    """The cluster preflight; outputs ``interfaces`` (node name → collective interface)
    and ``checks``."""

    interfaces: pulumi.Output[dict[str, str | None]]
    checks: pulumi.Output[list[dict[str, Any]]]

    def __init__(
        self,
        name: str,
        props: ClusterCheckProps | pulumi.Output[ClusterCheckProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        facts: pulumi.Input[Mapping[str, Any]],
        image_digests: pulumi.Input[Mapping[str, Any]] | None = None,
        model_commits: pulumi.Input[Mapping[str, Any]] | None = None,
    ) -> None:
        """``props``: an Output of them when the nodes' hosts and addresses are known only
        during the update (a cloud fleet's)."""
        inputs = ClusterCheckProps.inputs_of(
            props,
            facts=facts,
            image_digests=image_digests,
            model_commits=model_commits,
        )
        super().__init__(name, inputs, opts)


# ------------------------------------------------------------------- the checks


def _check(
    p: ClusterCheckProps, progress: ResourceProgress, *, bind: bool, enforce: bool
) -> dict[str, Any]:
    if p.facts is None:
        issue = config_issue("facts", "missing", "pass every node's SshHost facts as `facts`")
        raise PropsError([issue], "ClusterCheckProps")
    progress.step(f"connecting to {len(p.nodes)} node(s)")
    with _sessions(p.nodes) as (conns, findings):
        versions = _engine_versions(p, conns, findings, progress)
        listener, connects = _reachability(p, conns, progress, bind=bind)
    report = _report(p, p.facts, versions, listener, connects, findings)
    if enforce:
        raise_for_failures(report)
        progress.note(_summary(p, report))
    return p.to_outputs(
        interfaces=dict(report.interfaces), checks=[f.to_dict("node") for f in report.findings]
    )


@contextlib.contextmanager
def _sessions(
    nodes: Sequence[ClusterCheckNode],
) -> Iterator[tuple[dict[str, Connection], list[Finding]]]:
    """Open every node's connection at once; a node that cannot be reached is a finding."""
    opened = _each(nodes, lambda node: open_host(node.host))
    conns: dict[str, Connection] = {}
    findings: list[Finding] = []
    for node in nodes:
        result = opened[node.name]
        if isinstance(result, Exception):
            findings.append(_unreachable(node, result))
        else:
            conns[node.name] = result
    with contextlib.ExitStack() as stack:
        for conn in conns.values():
            stack.enter_context(conn)
        yield conns, findings


def _engine_versions(
    p: ClusterCheckProps,
    conns: Mapping[str, Connection],
    findings: list[Finding],
    progress: ResourceProgress,
) -> dict[str, str | None]:
    command = p.engine_version_command
    if not command:
        return {}
    progress.step("reading the engine version on every node")
    nodes = [n for n in p.nodes if n.name in conns]
    results = _each(
        nodes, lambda n: conns[n.name].run(command, timeout=_COMMAND_TIMEOUT, check=False)
    )
    versions: dict[str, str | None] = {}
    for node in nodes:
        result = results[node.name]
        version = None
        if isinstance(result, CommandResult) and result.ok:
            version = parse_engine_version(result.stdout)
        if version is None:
            findings.append(_version_failure(node.name, command, result))
        versions[node.name] = version
    return versions


def _reachability(
    p: ClusterCheckProps, conns: Mapping[str, Connection], progress: ResourceProgress, *, bind: bool
) -> tuple[ListenerReport | None, dict[str, ConnectReport]]:
    """The head's listener, then every node's connects while it lives. Without the head
    (unreachable over SSH) nothing is tested; nodes still resolve their own address."""
    head = p.head
    nodes = [n for n in p.nodes if n.name in conns]
    if head.name not in conns:
        return None, _connect_all(p, nodes, conns, ())
    layout = EngineLayout(p.engine_dir)
    ports = sorted(set(p.ports.values()))
    command = listener_command(
        head.cluster_address,
        ports,
        layout=layout,
        expected=len(nodes),
        container=p.container,
        bind=bind,
        lifetime_s=p.listen_timeout_s,
    )
    what = "starting a test listener" if bind else "looking up who holds"
    progress.step(f"{what} on {head.name} ({head.cluster_address}: {_ports(ports)})")
    with _Listener(conns[head.name], command, p.listen_timeout_s) as listener:
        early = listener.wait_ready()
        if early.testable():
            progress.step(
                f"connecting from {len(nodes)} node(s) to the head ({_ports(early.testable())})"
            )
        connects = _connect_all(p, nodes, conns, early.testable())
    return listener.report(), connects


def _connect_all(
    p: ClusterCheckProps,
    nodes: Sequence[ClusterCheckNode],
    conns: Mapping[str, Connection],
    ports: Sequence[int],
) -> dict[str, ConnectReport]:
    limit = p.connect_timeout_s * len(ports) + _COMMAND_TIMEOUT

    def connect(node: ClusterCheckNode) -> ConnectReport:
        command = connect_command(
            p.head.cluster_address,
            ports,
            own_address=node.cluster_address,
            timeout_s=p.connect_timeout_s,
        )
        result = conns[node.name].run(command, timeout=limit, check=False)
        report = parse_connect(result.stdout)
        return report if result.ok else replace(report, error=_failed(result))

    results = _each(nodes, connect)
    return {
        name: r if isinstance(r, ConnectReport) else ConnectReport(error=_message(r))
        for name, r in results.items()
    }


class _Listener:
    """The head's listener, run on its own thread: the connection streams its lines, so
    the nodes connect as soon as it reports ``ready``; leaving the block stops it."""

    def __init__(self, conn: Connection, command: str, lifetime_s: float) -> None:
        self._conn = conn
        self._command = command
        self._lifetime = lifetime_s
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._future: Future[CommandResult] | None = None

    def __enter__(self) -> Self:
        self._future = self._pool.submit(self._run)
        return self

    def wait_ready(self) -> ListenerReport:
        """What the listener printed once it is ready (or has ended)."""
        self._ready.wait(self._lifetime + _COMMAND_TIMEOUT)
        return parse_listener("\n".join(self._lines))

    def report(self) -> ListenerReport:
        """Its whole output, once it has ended; ``error`` says why it did not start."""
        assert self._future is not None
        try:
            result = self._future.result()
        except AmdFleetError as e:
            return replace(parse_listener("\n".join(self._lines)), error=_message(e))
        report = parse_listener(result.stdout)
        return report if report.ready else replace(report, error=_failed(result))

    def __exit__(self, *_: object) -> None:
        pid = parse_listener("\n".join(self._lines)).pid
        if pid is not None and self._future is not None and not self._future.done():
            # It would end by itself at its lifetime: a failed stop only costs that wait.
            with contextlib.suppress(AmdFleetError):
                self._conn.run(stop_listener_command(pid), timeout=_STOP_TIMEOUT, check=False)
        self._pool.shutdown(wait=True)

    def _run(self) -> CommandResult:
        try:
            return self._conn.run(
                self._command,
                timeout=self._lifetime + _COMMAND_TIMEOUT,
                check=False,
                on_output=self._line,
            )
        finally:
            self._ready.set()

    def _line(self, line: str) -> None:
        self._lines.append(line)
        if line.startswith("AMDFLEET_LISTEN ready"):
            self._ready.set()


def _report(
    p: ClusterCheckProps,
    facts: Mapping[str, Mapping[str, Any]],
    versions: Mapping[str, str | None],
    listener: ListenerReport | None,
    connects: Mapping[str, ConnectReport],
    findings: list[Finding],
) -> ClusterReport:
    nodes = [_node_facts(p, node, facts[node.name], versions, connects) for node in p.nodes]
    all_findings = [*findings, *check_agreement(nodes)]
    interfaces: dict[str, str | None] = {}
    for node in nodes:
        interfaces[node.name], network = check_network(node)
        all_findings += network
    if listener is not None:
        all_findings += check_reachability(
            p.head.name, p.head.cluster_address, p.ports, listener, connects
        )
    rank = {node.name: i for i, node in enumerate(p.nodes)}
    ordered = sorted(
        all_findings, key=lambda f: -1 if f.subject == CLUSTER else rank.get(f.subject, 0)
    )
    return ClusterReport(interfaces, tuple(ordered))


def _node_facts(
    p: ClusterCheckProps,
    node: ClusterCheckNode,
    facts: Mapping[str, Any],
    versions: Mapping[str, str | None],
    connects: Mapping[str, ConnectReport],
) -> NodeFacts:
    connect = connects.get(node.name)
    return NodeFacts(
        name=node.name,
        facts=HostFacts.from_dict(facts),
        cluster_address=node.cluster_address,
        addresses=connect.resolved if connect is not None else (),
        network_interface=node.network_interface,
        rdma_devices=node.rdma_devices,
        image_digest=p.image_digests.get(node.name) if p.image_digests is not None else None,
        engine_version=versions.get(node.name),
        model_commit=p.model_commits.get(node.name) if p.model_commits is not None else None,
    )


# ----------------------------------------------------------------------- helpers


def _each(
    nodes: Sequence[ClusterCheckNode], call: Callable[[ClusterCheckNode], _T]
) -> dict[str, _T | Exception]:
    """``call`` on every node at once; an amdfleet error is returned, not raised."""
    outcome = fan_out({node.name: functools.partial(call, node) for node in nodes})
    outcome.raise_first(expected=AmdFleetError)
    return {node.name: outcome.outcome(node.name) for node in nodes}


def _unreachable(node: ClusterCheckNode, error: Exception) -> Finding:
    hint = getattr(error, "hint", "") or f"check that {node.name} is up and reachable over SSH"
    return Finding(node.name, "ssh", False, _message(error), hint)


def _version_failure(name: str, command: str, result: CommandResult | Exception) -> Finding:
    if isinstance(result, CommandResult):
        why = _failed(result) if not result.ok else "it printed no version"
    else:
        why = _message(result)
    return Finding(
        name,
        "engine_version",
        False,
        f"could not read the engine version ({why})",
        f"check that the engine is installed on {name} as on the other nodes (ran: {command})",
    )


def _failed(result: CommandResult) -> str:
    tail = result.tail(3).replace("\n", " | ") or "no output"
    return f"exit {result.exit_code}: {tail}"


def _message(error: Exception) -> str:
    """An error's first line, without the ``[host]`` prefix of a RemoteError."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, RemoteError) and first.startswith(f"[{error.host}] "):
        return first[len(error.host) + 3 :]
    return first


def _ports(ports: Sequence[int]) -> str:
    return ", ".join(str(p) for p in ports)


def _summary(p: ClusterCheckProps, report: ClusterReport) -> str:
    """``cluster preflight passed: 3 node(s); interfaces eth0; every node reached
    10.0.0.1 at 29500``"""
    names = sorted({i for i in report.interfaces.values() if i})
    parts = [f"{len(p.nodes)} node(s)", f"interfaces {', '.join(names) or 'none'}"]
    if any(f.check == "reach_head" for f in report.findings):
        ports = _ports(sorted(set(p.ports.values())))
        parts.append(f"every node reached {p.head.cluster_address} at {ports}")
    return f"cluster preflight passed: {'; '.join(parts)}"
