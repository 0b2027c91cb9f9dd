"""EngineCluster: one engine spread over several nodes (pipeline/tensor parallel across
hosts), started, checked and stopped as one.

A multi-node engine lives or dies whole: vLLM's workers cannot rejoin a running head (its
rendezvous happened at start: a restarted worker exits 1), and a head whose pipeline lost
a stage still answers ``/health`` and ``/v1/models`` with 200 while every completion hangs
(ENVIRONMENT.md). So the cluster is one resource, not one per node, and it heals itself
without a ``pulumi`` command and without SSH between hosts: each node's supervisor
restarts its own engine whenever it stops, and runs a watchdog
(:class:`~amdfleet.remote.supervision.Watchdog`: amdfleet's own supervisor loop and, for
the docker runtime, a watchdog on the host beside dockerd)
that probes the head's API and restarts the node's engine when the head stopped
completing tokens: a head whose worker died, and a worker left in a dead head's
rendezvous, both restart and meet in the new head's.

- ``create``/``update`` stop the engine on every node, upload every node's rendered files,
  ``cluster.env`` (the collective-traffic interface derived from the host's facts by
  :class:`~amdfleet.providers.cluster_check.ClusterCheck`) and ``secrets.env`` (0600),
  start the head, then the workers, and wait until the head answers its readiness paths
  and completes one real token, watching every worker meanwhile. A worker that exits, or
  a cluster that is not serving by the deadline, fails the operation with the head's and
  every worker's log tails, after stopping every node: nothing is left running.
- ``read`` (``pulumi refresh``) checks the engine on every node and, when all run, one
  real completion on the head within a deadline. A node that is down, or a head that
  does not complete, sets ``running`` false and ``not_ready`` to what was seen (the node,
  its supervisor's line when it gave up restarting it, and the last lines of its log),
  shown as a warning; the next ``pulumi up`` then restarts the whole cluster in order.
- ``delete`` stops every node's engine and removes its directory; idempotent.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pulumi
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pydantic import BaseModel, ConfigDict, Field

from amdfleet.addresses import host_port
from amdfleet.errors import EngineStartError, RemoteError
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.engine_node import (
    CALL_TIMEOUT,
    EngineFile,
    EngineProps,
    ReadinessCheck,
    engine_diff,
    log_tail,
    node_supervisor,
    open_engine_host,
    serving_problem,
    stop_and_remove,
    unit_name,
    upload,
    with_fingerprints,
)
from amdfleet.providers.engine_service import NOTHING_LEFT_HINT, wait_ready
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import plain
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.supervision import Supervisor
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.fanout import fan_out
from amdfleet.remote.transport.target import HostTarget

CLUSTER_ENV_FILE = "cluster.env"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_T = TypeVar("_T")


class EngineClusterNode(BaseModel):
    """One node of the cluster: where it runs and what it runs (rank = its position)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The node's name (the fleet host's).")
    host: HostTarget = Field(description="The node's host.")
    remote_dir: str = Field(description="The engine's directory on the host.")
    files: dict[str, EngineFile] = Field(description="Rendered files by file name.")
    container: str | None = Field(None, description="The engine's container (docker).")
    cluster_env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment from the host's facts, written to cluster.env.",
    )

    @property
    def unit(self) -> str:
        """The rendered systemd unit's file name."""
        return unit_name(self.files, self.remote_dir)

    @property
    def layout(self) -> EngineLayout:
        """The engine's files on the host."""
        return EngineLayout(self.remote_dir)

    def upload_files(self) -> dict[str, EngineFile]:
        """The rendered files plus ``cluster.env``."""
        body = "".join(f"{k}={v}\n" for k, v in sorted(self.cluster_env.items()))
        header = "# From this host's facts (amdfleet's cluster check); literal KEY=VALUE.\n"
        return {**self.files, CLUSTER_ENV_FILE: EngineFile(content=header + body, mode=0o644)}


class EngineClusterProps(EngineProps):
    """EngineCluster's properties: every node's files and host, rank 0 (the head) first,
    the shared secret environment (passed to :class:`EngineCluster` apart) and the head's
    readiness check; fingerprints added by ``check``; whether it serves (outputs)."""

    nodes: tuple[EngineClusterNode, ...] = Field(min_length=2, description="Head first, by rank.")
    readiness: ReadinessCheck = Field(description="When the head counts as serving.")

    @property
    def head(self) -> EngineClusterNode:
        """Rank 0: the node that serves the API."""
        return self.nodes[0]


class EngineClusterProvider(ResourceProvider):
    """Runs one engine over several nodes. Stateless."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Add the fingerprints of every node's files and env, and of the secrets
        (:func:`~amdfleet.providers.engine_node.with_fingerprints`)."""
        return CheckResult(inputs=with_fingerprints(news, "nodes"), failures=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Stop anything there, upload, start head then workers, wait until the head
        serves a real completion. All-or-nothing: on failure every node is stopped and
        EngineStartError names the failing node with every node's log tail."""
        p = EngineClusterProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            _deploy(p, progress)
        return CreateResult(id_=f"{p.head.host.name}:{p.head.remote_dir}", outs=p.started_outputs())

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Check every node's engine and, when all run, one real completion on the head.
        What does not serve is reported in ``not_ready`` and as a warning."""
        p = EngineClusterProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress, _connections(p) as conns:
            problem = _cluster_problem(p, conns)
            if problem:
                progress.warn(f"the engine cluster does not serve: {problem}")
        return ReadResult(id_=id_, outs=p.to_outputs(running=problem is None, not_ready=problem))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Restart the whole cluster on changed files, env, secrets or readiness check, or
        when refresh found it not serving; replace when the nodes' hosts or directories
        changed (the old engines are stopped first)."""
        return engine_diff(olds, news, ["nodes"] if _placement(olds) != _placement(news) else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Stop every node, upload the new files and start the cluster again in order."""
        p = EngineClusterProps.from_inputs(news)
        with ResourceProgress.for_resource(news) as progress:
            _deploy(p, progress)
        return UpdateResult(outs=p.started_outputs())

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Stop every node's engine and remove its directory. Idempotent."""
        p = EngineClusterProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress, _connections(p) as conns:
            progress.step(f"stopping the engine on {len(p.nodes)} nodes")
            _stop_all(p, conns)


class EngineCluster(
    AmdFleetResource, name="EngineCluster", provider=EngineClusterProvider, props=EngineClusterProps
):
    """One engine over several nodes; ``running`` and the fingerprints are outputs."""

    running: pulumi.Output[bool]
    started_at: pulumi.Output[str]
    files_hash: pulumi.Output[str]
    secrets_hash: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: EngineClusterProps | pulumi.Output[EngineClusterProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        secret_env: pulumi.Input[Mapping[str, str]],
        cluster_env: Sequence[pulumi.Input[Mapping[str, str]]] | None = None,
        files: Sequence[pulumi.Input[Mapping[str, Any]] | None] | None = None,
    ):
        """``files`` (per node, in rank order, the rendered files as JSON) replaces the
        props' files, e.g. with launch files that run an image digest known only once it
        is pinned. ``props``: an Output of them when the nodes' hosts and addresses are
        known only during the update (a cloud fleet's)."""
        hidden = pulumi.ResourceOptions(additional_secret_outputs=["secrets_hash", "secret_env"])
        opts = pulumi.ResourceOptions.merge(opts, hidden)
        build = functools.partial(_node_inputs, cluster_env=cluster_env, files=files)
        nodes: pulumi.Input[list[Any]] = (
            build(props)
            if isinstance(props, EngineClusterProps)
            else props.apply(lambda p: pulumi.Output.from_input(build(p)))
        )
        inputs = EngineClusterProps.inputs_of(
            props,
            nodes=nodes,
            secret_env=secret_env,
        )
        super().__init__(name, inputs, opts)


def _node_inputs(
    props: EngineClusterProps,
    cluster_env: Sequence[pulumi.Input[Mapping[str, str]]] | None,
    files: Sequence[pulumi.Input[Mapping[str, Any]] | None] | None,
) -> list[Any]:
    """The ``nodes`` input: each node's props, with its cluster env and deferred files."""
    nodes: list[Any] = [n.model_dump(mode="json") for n in props.nodes]
    if cluster_env is not None:
        nodes = [{**n, "cluster_env": env} for n, env in zip(nodes, cluster_env, strict=True)]
    if files is not None:
        nodes = [
            {**n, "files": f} if f is not None else n for n, f in zip(nodes, files, strict=True)
        ]
    return nodes


def _deploy(p: EngineClusterProps, progress: ResourceProgress) -> None:
    with _connections(p) as conns:
        progress.step(f"stopping any engine already running on the {len(p.nodes)} nodes")
        _stop_all(p, conns)
        # Each node's supervisor restarts its own engine, and its watchdog restarts it when
        # the cluster stops completing tokens on the head.
        watched = _watchdog_checks(p)
        supervisors = [
            node_supervisor(conn, node.layout, node.unit, node.container, check)
            for node, conn, check in zip(p.nodes, conns, watched, strict=True)
        ]
        try:
            progress.step(f"uploading the engine files to {len(p.nodes)} nodes")
            _each(
                len(p.nodes),
                lambda i: upload(
                    conns[i], p.nodes[i].layout, p.nodes[i].upload_files(), p.secret_env
                ),
            )
            for rank, (node, conn, sup) in enumerate(zip(p.nodes, conns, supervisors, strict=True)):
                progress.step(f"starting rank {rank} on {node.name}")
                conn.run(sup.start_command(), timeout=CALL_TIMEOUT)
            watch = _watch_workers(p, conns, supervisors)
            wait_ready(conns[0], supervisors[0], p.readiness, p.secret_env, progress, watch)
            _each(
                len(p.nodes),
                lambda i: conns[i].run(supervisors[i].mark_served_command(), timeout=CALL_TIMEOUT),
            )
        except RemoteError as e:
            tails = [log_tail(conn, sup) for conn, sup in zip(conns, supervisors, strict=True)]
            _stop_all(p, conns)
            raise _start_error(p, e, supervisors, tails) from e


def _watchdog_checks(p: EngineClusterProps) -> list[ReadinessCheck]:
    """What each node's watchdog probes: the head's API, from the head as its readiness
    check does, from a worker at the head's address (a worker whose head died, or was
    restarted, stays in its old rendezvous: vLLM's does not exit, so it must restart
    itself to join the new one)."""
    url = urlsplit(p.readiness.base_url)
    host = url.hostname or ""
    if host in _LOOPBACK:
        host = p.head.host.address
    netloc = host_port(host, url.port) if url.port else host
    head_api = urlunsplit((url.scheme, netloc, url.path, "", ""))
    worker = p.readiness.model_copy(update={"base_url": head_api})
    return [p.readiness, *[worker] * (len(p.nodes) - 1)]


@contextlib.contextmanager
def _connections(p: EngineClusterProps) -> Any:
    """One connection per node (rank order), all closed on exit."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(open_engine_host(n.host, p.secret_env)) for n in p.nodes]


def _stop_all(p: EngineClusterProps, conns: Sequence[Connection]) -> None:
    """Stop every node at once (a stop may wait out the engine's grace period)."""
    _each(
        len(p.nodes),
        lambda i: stop_and_remove(
            conns[i], p.nodes[i].layout, p.nodes[i].unit, p.nodes[i].container
        ),
    )


def _each(count: int, action: Callable[[int], _T]) -> list[_T]:
    """``action(i)`` for every node index concurrently; once all have ended, the first
    failure is raised."""
    outcome = fan_out({i: functools.partial(action, i) for i in range(count)})
    outcome.raise_first()
    return outcome.in_order(range(count))


def _watch_workers(
    p: EngineClusterProps, conns: Sequence[Connection], supervisors: Sequence[Supervisor]
) -> Callable[[], None]:
    """A check, run before each look at the head, that every worker still runs its first
    start (a restarted worker cannot rejoin: the rendezvous is over)."""

    def watch() -> None:
        for rank in range(1, len(p.nodes)):
            command = supervisors[rank].first_run_command()
            if not conns[rank].run(command, timeout=CALL_TIMEOUT, check=False).ok:
                name = p.nodes[rank].name
                raise RemoteError(conns[rank].host, f"the engine on worker {name} exited")

    return watch


def _cluster_problem(p: EngineClusterProps, conns: Sequence[Connection]) -> str | None:
    """Every node's engine, then (only when all run: a completion through a dead stage
    would just hang) one real completion on the head. None when it serves."""
    supervisors = [
        node_supervisor(conn, node.layout, node.unit, node.container)
        for node, conn in zip(p.nodes, conns, strict=True)
    ]
    worker_check = p.readiness.model_copy(update={"serves_api": False})
    for rank in range(len(p.nodes) - 1, 0, -1):
        problem = serving_problem(conns[rank], supervisors[rank], worker_check)
        if problem:
            return _node_problem(p, rank, problem, conns[rank], supervisors[rank])
    problem = serving_problem(conns[0], supervisors[0], p.readiness)
    if problem:
        return _node_problem(p, 0, problem, conns[0], supervisors[0])
    return None


def _node_problem(
    p: EngineClusterProps, rank: int, problem: str, conn: Connection, supervisor: Supervisor
) -> str:
    node = p.nodes[rank]
    tail = log_tail(conn, supervisor)
    return (
        f"{_role(rank)} {node.name} ({conn.host}): {problem}\n"
        f"  last lines of {supervisor.log_source} on {node.name}:\n{tail}"
    )


def _start_error(
    p: EngineClusterProps,
    cause: RemoteError,
    supervisors: Sequence[Supervisor],
    tails: Sequence[str],
) -> EngineStartError:
    host = cause.host
    reason = str(cause).removeprefix(f"[{host}] ")
    logs = "\n".join(
        f"  last lines of {sup.log_source} on {node.name} ({_role(rank)}):\n{tail}"
        for rank, (node, sup, tail) in enumerate(zip(p.nodes, supervisors, tails, strict=True))
    )
    return EngineStartError(
        host,
        f"engine cluster failed to start: {reason}\n"
        f"  command on every node: {p.head.layout.launch}\n{logs}",
        NOTHING_LEFT_HINT,
    )


def _role(rank: int) -> str:
    return "head" if rank == 0 else f"worker rank {rank}"


def _placement(props: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    nodes = plain(props.get("nodes")) or []
    if not isinstance(nodes, list):
        return []
    return [(n.get("host"), n.get("remote_dir")) for n in nodes if isinstance(n, dict)]
