"""EngineService: the rendered engine running on one node.

``create`` uploads the rendered launch script, env file and unit into
``/opt/amdfleet/<stack>``, writes ``secrets.env`` (0600) from secret inputs, starts the
launch script under the supervisor the host calls for (:mod:`amdfleet.remote.supervision`:
dockerd's restart policy for the docker runtime, else systemd where it is PID 1, else
amdfleet's supervisor loop, with its completion watchdog), which restarts an engine that
stops without being asked, and waits for ``/health``
and ``/v1/models`` (with the served model listed), then one real token from
``/v1/completions``, before a deadline sized to the model. Readiness is probed on the
host itself, over the connection, so a dead engine is noticed at once and its log tail
reported (a crash before the engine was ready fails the deploy at once, though the
supervisor would restart it). ``read`` (``pulumi refresh``) checks the same way, token
included, and reports what it found (``not_ready``, and a warning with the log tail).
``update`` restarts only when the rendered content or a secret changed, or when refresh
found the engine not serving. ``delete`` stops the engine and removes its directory;
deleting something already gone succeeds. ``adopt`` imports an engine amdfleet did not
start (``pulumi import``, ``engine.adopt``; :mod:`~amdfleet.providers.adoption`): it
runs on as started until a difference from the stack restarts it, and refresh, update
and delete act on it by its pid. A multi-node engine is an
:class:`~amdfleet.providers.engine_cluster.EngineCluster` instead.

Progress (:mod:`amdfleet.providers.progress`): the resource's status shows each phase
(stop, upload, start), then, while waiting, the time against the deadline, what each
readiness path answered and the engine log's latest line ("Loading weights..."); an
engine that became ready leaves a note with how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pydantic import Field, model_validator

from amdfleet.errors import RemoteError
from amdfleet.providers import adoption
from amdfleet.providers.adoption import AdoptedEngine
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.engine_node import (
    CALL_TIMEOUT,
    STOP_TIMEOUT,
    EngineFile,
    EngineProps,
    ReadinessCheck,
    engine_diff,
    generation_problem,
    log_tail,
    node_supervisor,
    open_engine_host,
    serving_problem,
    start_error,
    stop_and_remove,
    unit_name,
    upload,
    with_fingerprints,
)
from amdfleet.providers.progress import URN_KEY, ResourceProgress, format_duration
from amdfleet.providers.props import changed_keys, plain
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote import adoption as adopt_facts
from amdfleet.remote.engine import (
    API_KEY_VAR,
    EngineLayout,
    ReadinessResult,
    parse_readiness,
    readiness_command,
)
from amdfleet.remote.supervision import Supervisor
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.target import HostTarget

NOTHING_LEFT_HINT = "fix the cause above and run `pulumi up` again; nothing was left running"

REPLACE_ON = ("host", "remote_dir")
# Readiness is polled quickly at first (a small model or a restarted engine is up in
# seconds), then every 2 s (a 405B load takes many minutes).
POLL_FIRST_S = 0.25
POLL_MAX_S = 2.0
# A worker serves no API: it counts as started once it has stayed up this long (checked
# every POLL_FIRST_S). That catches a worker that dies on start-up (bad flags, a missing
# file); the head's readiness covers the rest, since the head serves only once every
# worker has joined.
_WORKER_SETTLE_S = 1.0


class EngineServiceProps(EngineProps):
    """EngineService's properties: the rendered files, secrets and readiness check of one
    node (inputs; the secret environment is passed to :class:`EngineService` apart), the
    fingerprints ``check`` adds, and whether the engine runs (outputs)."""

    host: HostTarget = Field(description="The node's host.")
    remote_dir: str = Field(description="The engine's directory on the host.")
    files: dict[str, EngineFile] = Field(description="Rendered files by file name.")
    container: str | None = Field(None, description="The engine's container (docker).")
    readiness: ReadinessCheck = Field(description="When the engine counts as started.")
    adopted: AdoptedEngine | None = Field(
        None,
        description="Output of an import: the running engine amdfleet adopted and did not "
        "start (None once amdfleet started it).",
    )

    def to_outputs(self, **outputs: Any) -> dict[str, Any]:
        """The outputs, with ``adopted`` only for an adopted engine (its key hashes
        secret)."""
        data = super().to_outputs(**outputs)
        if data.get("adopted") is None:
            data.pop("adopted", None)
        return adoption.wrap_key_hashes(data)

    @property
    def unit(self) -> str:
        """The rendered systemd unit's file name."""
        return unit_name(self.files, self.remote_dir)

    @model_validator(mode="before")
    @classmethod
    def _readiness_was_probe(cls, data: Any) -> Any:
        """State written before the rename holds the readiness check as ``probe``."""
        if isinstance(data, Mapping) and "probe" in data and "readiness" not in data:
            data = {("readiness" if k == "probe" else k): v for k, v in data.items()}
        return data


@dataclass(frozen=True)
class EngineServiceArgs:
    """An EngineService on the program side: its props (an Output of them when the host
    is known only during the update), its secret environment (there an Output, so not a
    value of the props model) and, when they are known only during the update, its files
    (an Output of their JSON form, in place of the props' files)."""

    props: EngineServiceProps | pulumi.Output[EngineServiceProps]
    secret_env: pulumi.Input[Mapping[str, str]]
    files: pulumi.Input[Mapping[str, Any]] | None = None

    def inputs(self) -> dict[str, Any]:
        """The resource's inputs (what :class:`EngineService` registers, without its URN)."""
        deferred: dict[str, Any] = {"files": self.files} if self.files is not None else {}
        return EngineServiceProps.inputs_of(self.props, secret_env=self.secret_env, **deferred)


class EngineServiceProvider(ResourceProvider):
    """Runs one node's engine. Stateless."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Add the content and secret fingerprints that drive diffs
        (:func:`~amdfleet.providers.engine_node.with_fingerprints`)."""
        return CheckResult(inputs=with_fingerprints(news, "files"), failures=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Upload, start and wait until ready.

        All-or-nothing: on any failure the engine is stopped and its directory removed,
        then EngineStartError is raised with the last lines of the engine log.
        """
        p = EngineServiceProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            _deploy(p, progress)
        return CreateResult(id_=f"{p.host.name}:{p.remote_dir}", outs=p.started_outputs())

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Report whether the engine still serves (``running``): its supervisor reports it
        running and, on a node that serves the API, the health path answers 200 (an API
        server that died while its worker processes linger is not running) and one token
        comes back in time. An engine its supervisor is restarting, or gave up on, is not
        running. What was seen goes into ``not_ready`` and a warning, with the log tail.
        An adopted engine (:mod:`~amdfleet.providers.adoption`) runs while its pid is the
        process adopted and its health path answers 200."""
        p = EngineServiceProps.from_inputs(props)
        if p.adopted is not None:
            return ReadResult(id_=id_, outs=_read_adopted(p, p.adopted, props))
        layout = EngineLayout(p.remote_dir)
        with _open(p) as conn, ResourceProgress.for_resource(props) as progress:
            supervisor = node_supervisor(conn, layout, p.unit, p.container)
            problem = serving_problem(conn, supervisor, p.readiness)
            if problem:
                tail = log_tail(conn, supervisor)
                problem = f"{problem}\n  last lines of {supervisor.log_source}:\n{tail}"
                progress.warn(f"[{p.host.name}] the engine does not serve: {problem}")
        return ReadResult(id_=id_, outs=p.to_outputs(running=problem is None, not_ready=problem))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Restart on changed content, secrets or readiness check, or when refresh found
        the engine not running; replace on another host/dir. An adopted engine restarts
        only when it differs from what the stack runs (each difference is reported as a
        warning) or no longer runs (:func:`~amdfleet.providers.adoption.adoption_diff`)."""
        if olds.get("adopted"):
            result, differences = adoption.adoption_diff(olds, news)
            if differences:
                with ResourceProgress.for_resource(olds) as progress:
                    progress.warn(
                        "the adopted engine differs from the stack, so `up` restarts it "
                        "the stack's way, under amdfleet's supervisor:\n  "
                        + "\n  ".join(differences)
                    )
            return result
        return engine_diff(olds, news, changed_keys(olds, news, REPLACE_ON))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Stop the running engine (an adopted one by its pid), upload the new files and
        start again."""
        p = EngineServiceProps.from_inputs(news)
        with ResourceProgress.for_resource(news) as progress:
            _stop_adopted(p, olds, progress)
            _deploy(p, progress)
        return UpdateResult(outs=p.started_outputs())

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Stop the engine under whichever supervisor ran it (unit, container or
        supervisor loop; an adopted engine by its pid) and remove its directory.
        Idempotent."""
        p = EngineServiceProps.from_inputs(props)
        layout = EngineLayout(p.remote_dir)
        with ResourceProgress.for_resource(props) as progress:
            _stop_adopted(p, props, progress)
        with ResourceProgress.for_resource(props) as progress, _open(p) as conn:
            progress.step(f"stopping the engine and removing {layout.remote_dir}")
            stop_and_remove(conn, layout, p.unit, p.container)

    def adopt(
        self, id_: str, hosts: Mapping[str, HostTarget], urn: str
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """An import: the engine serving on the port the id ``<host>:<port>`` names,
        found on that host (one of ``hosts``, the stack's ``fleet.hosts``). Returns the id,
        the inputs and the outputs of its state; changes nothing on the host.

        Raises ConfigError for an id that is malformed or names no stack host, RemoteError
        when nothing listens on the port or the host lacks ``ss``, ``ps`` or ``pkill``.
        """
        host, port = adoption.parse_id(id_, hosts)
        with open_engine_host(host, {}) as conn:
            command = adopt_facts.engine_facts_command(port, adoption.KEY_VARS)
            output = conn.run(command, timeout=CALL_TIMEOUT).stdout
        try:
            found = adopt_facts.parse_engine_facts(output)
        except adopt_facts.MissingTool as e:
            raise adoption.missing_tool(host, str(e)) from e
        if found is None:
            raise adoption.not_found(host, port)
        state = adoption.observed_state(host, port, found, adoption.stack_of(urn))
        p = EngineServiceProps.from_inputs(state)
        adopted = AdoptedEngine.model_validate(state["adopted"])
        outputs = _read_adopted(p, adopted, {URN_KEY: urn})
        inputs = {k: v for k, v in state.items() if k != "adopted"}
        return id_, inputs, {**outputs, "started_at": adopt_facts.iso_time(found.started)}


class EngineService(
    AmdFleetResource, name="EngineService", provider=EngineServiceProvider, props=EngineServiceProps
):
    """The engine on one node; ``running`` and the content fingerprints are outputs."""

    running: pulumi.Output[bool]
    started_at: pulumi.Output[str]
    files_hash: pulumi.Output[str]
    secrets_hash: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: EngineServiceProps | pulumi.Output[EngineServiceProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        secret_env: pulumi.Input[Mapping[str, str]],
        files: pulumi.Input[Mapping[str, Any]] | None = None,
    ):
        """``files`` (the rendered files as JSON) replaces the props' files, e.g. with
        launch files that run an image digest known only once it is pinned."""
        hidden = pulumi.ResourceOptions(additional_secret_outputs=["secrets_hash", "secret_env"])
        opts = pulumi.ResourceOptions.merge(opts, hidden)
        deferred: dict[str, Any] = {"files": files} if files is not None else {}
        inputs = EngineServiceProps.inputs_of(
            props,
            secret_env=secret_env,
            **deferred,
        )
        super().__init__(name, inputs, opts)


def _deploy(p: EngineServiceProps, progress: ResourceProgress) -> None:
    layout = EngineLayout(p.remote_dir)
    with _open(p) as conn:
        progress.step("stopping any engine already running there")
        stop_and_remove(conn, layout, p.unit, p.container)
        supervisor = node_supervisor(conn, layout, p.unit, p.container, p.readiness)
        try:
            progress.step(f"uploading {len(p.files)} files to {layout.remote_dir}")
            upload(conn, layout, p.files, p.secret_env)
            progress.step(f"starting {layout.launch}")
            conn.run(supervisor.start_command(), timeout=CALL_TIMEOUT)
            _wait(conn, supervisor, p, progress)
        except RemoteError as e:
            tail = log_tail(conn, supervisor)
            stop_and_remove(conn, layout, p.unit, p.container)
            raise start_error(
                conn.host, layout, e, supervisor.log_source, tail, NOTHING_LEFT_HINT
            ) from e


def _read_adopted(
    p: EngineServiceProps, adopted: AdoptedEngine, props: Mapping[str, Any]
) -> dict[str, Any]:
    """The outputs of a read of an adopted engine: running while its pid is the process
    adopted and its health path answers 200."""
    alive = adopt_facts.same_process(adopted.pid, adopted.started)
    with _open(p) as conn, ResourceProgress.for_resource(props) as progress:
        command = readiness_command(alive, p.readiness.base_url, ("/health",))
        result = parse_readiness(conn.run(command, timeout=CALL_TIMEOUT, stdin="").stdout)
        problem = None
        if not result.alive:
            problem = f"the adopted engine (pid {adopted.pid}) is not running"
        elif not result.ready(("/health",)):
            problem = f"/health answered {result.statuses.get('/health', (0, ''))[0] or 'nothing'}"
        if problem:
            progress.warn(f"[{p.host.name}] the engine does not serve: {problem}")
    return p.to_outputs(running=problem is None, not_ready=problem)


def _stop_adopted(
    p: EngineServiceProps, state: Mapping[str, Any], progress: ResourceProgress
) -> None:
    """Stop the adopted engine ``state`` records, if any (by pid, guarded by its start
    time; nothing when that process is gone)."""
    recorded = plain(state.get("adopted"))
    if not recorded:
        return
    adopted = AdoptedEngine.model_validate(recorded)
    progress.step(f"stopping the adopted engine (pid {adopted.pid})")
    with _open(p) as conn:
        conn.run(adopt_facts.stop_command(adopted.pid, adopted.started), timeout=STOP_TIMEOUT)


def _open(p: EngineServiceProps) -> Connection:
    return open_engine_host(p.host, p.secret_env)


def _wait(
    conn: Connection, supervisor: Supervisor, p: EngineServiceProps, progress: ResourceProgress
) -> None:
    if not p.readiness.serves_api:
        progress.step(
            f"checking the engine stays up ({_WORKER_SETTLE_S:g} s; a worker serves no API)"
        )
        _wait_settled(conn, supervisor)
        progress.note("worker engine running (it serves no API)")
        return
    wait_ready(conn, supervisor, p.readiness, p.secret_env, progress)
    conn.run(supervisor.mark_served_command(), timeout=CALL_TIMEOUT)


def wait_ready(
    conn: Connection,
    supervisor: Supervisor,
    check: ReadinessCheck,
    secrets: Mapping[str, str],
    progress: ResourceProgress,
    watch: Callable[[], None] | None = None,
) -> None:
    """Poll the head until every readiness path answers 200 (``/v1/models`` listing the
    served model) and a one-token completion comes back, before ``check.timeout_s``.
    ``watch`` runs before each poll and raises to stop waiting (a cluster's dead worker).

    Raises RemoteError when the engine exits or the deadline passes.
    """
    paths = check.paths
    started = time.monotonic()
    limit = check.timeout_s
    header = f"Authorization: Bearer {secrets[API_KEY_VAR]}" if secrets.get(API_KEY_VAR) else ""
    command = readiness_command(supervisor.first_run_command(), check.base_url, paths)
    interval = POLL_FIRST_S
    generation = ""
    while True:
        if watch is not None:
            watch()
        result = parse_readiness(conn.run(command, timeout=CALL_TIMEOUT, stdin=header).stdout)
        if not result.alive:
            raise RemoteError(conn.host, "the engine exited during startup")
        if result.ready(paths, check.served_name):
            problem = generation_problem(conn, supervisor.layout, check)
            if problem is None:
                took = format_duration(time.monotonic() - started)
                progress.note(f"engine ready after {took}, serving {check.served_name}")
                return
            generation = f"; {problem}"
        if progress.enabled:
            progress.status(
                _waiting_status(conn, supervisor, result, paths, time.monotonic() - started, limit)
            )
        if time.monotonic() >= started + limit:
            seen = ", ".join(f"{x} -> {result.statuses.get(x, (0, ''))[0]}" for x in paths)
            raise RemoteError(
                conn.host,
                f"the engine was not ready within {limit} s ({seen}{generation})",
                "raise engine.startup_timeout_s if the model is still loading",
            )
        time.sleep(interval)
        interval = min(interval * 2, POLL_MAX_S)


def _waiting_status(
    conn: Connection,
    supervisor: Supervisor,
    result: ReadinessResult,
    paths: tuple[str, ...],
    elapsed: float,
    limit: int,
) -> str:
    """``waiting for the engine (14 s of 600 s): /health 503, /v1/models no answer; log: ...``"""
    answers = ", ".join(f"{p} {result.statuses.get(p, (0, ''))[0] or 'no answer'}" for p in paths)
    text = f"waiting for the engine ({int(elapsed)} s of {limit} s): {answers}"
    tail = conn.run(supervisor.log_tail_command(5), timeout=CALL_TIMEOUT, check=False).stdout
    lines = [line for line in tail.splitlines() if line.strip()]
    return f"{text}; log: {lines[-1].strip()}" if lines else text


def _wait_settled(conn: Connection, supervisor: Supervisor) -> None:
    """A worker node serves no API: it must stay running, never restarted, for the settle
    time."""
    deadline = time.monotonic() + _WORKER_SETTLE_S
    command = supervisor.first_run_command()
    while True:
        if not conn.run(command, timeout=CALL_TIMEOUT, check=False).ok:
            raise RemoteError(conn.host, "the engine exited during startup")
        if time.monotonic() >= deadline:
            return
        time.sleep(POLL_FIRST_S)
