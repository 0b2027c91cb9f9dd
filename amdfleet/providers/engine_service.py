"""EngineService: the rendered engine running on one node.

``create`` uploads the rendered launch script, env file and unit into
``/opt/amdfleet/<stack>``, writes ``secrets.env`` (0600) from secret inputs, starts the
launch script under the supervisor the host calls for (:mod:`amdfleet.remote.supervision`:
dockerd's restart policy for the docker runtime, else systemd where it is PID 1, else
amdfleet's supervisor loop), which restarts a crashed engine, and on the head waits for
``/health`` and ``/v1/models`` (with the served model listed) before a deadline sized to
the model. Readiness is probed on the host itself, over the connection, so a dead engine
is noticed at once and its log tail reported (a crash before the engine was ready fails
the deploy at once, though the supervisor would restart it). ``update`` restarts only
when the rendered content or a secret changed.
``delete`` stops the engine and removes its directory; deleting something already gone
succeeds.

Progress (:mod:`amdfleet.providers.progress`): the resource's status shows each phase
(stop, upload, start), then, while waiting, the time against the deadline, what each
readiness path answered and the engine log's latest line ("Loading weights..."); an
engine that became ready leaves a note with how long it took.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
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
from pulumi.runtime import rpc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from amdfleet.errors import EngineStartError, RemoteError
from amdfleet.providers.progress import Progress, format_duration, resource_urn
from amdfleet.providers.props import ProviderProps, changed_keys, fingerprint
from amdfleet.remote.connection import Connection
from amdfleet.remote.engine import (
    EngineLayout,
    ReadinessResult,
    parse_readiness,
    readiness_command,
    remove_command,
    secrets_env,
)
from amdfleet.remote.hosts import open_host
from amdfleet.remote.supervision import (
    FACTS_COMMAND,
    Supervisor,
    choose_supervisor,
    parse_facts,
    stop_any_command,
    supervisor_for,
)
from amdfleet.remote.target import HostTarget

RESTART_ON = ("files_hash", "secrets_hash", "readiness")
REPLACE_ON = ("host", "remote_dir")
_CALL_TIMEOUT = 60.0
# Stopping may wait out the engine's grace under each supervisor that could have run it.
_STOP_TIMEOUT = 150.0
# Readiness is polled quickly at first (a small model or a restarted engine is up in
# seconds), then every 2 s (a 405B load takes many minutes).
_POLL_FIRST_S = 0.25
_POLL_MAX_S = 2.0
# A worker serves no API: it counts as started once it has stayed up this long (checked
# every _POLL_FIRST_S). That catches a worker that dies on start-up (bad flags, a missing
# file); the head's readiness covers the rest, since the head serves only once every
# worker has joined.
_WORKER_SETTLE_S = 1.0


class RenderedFile(BaseModel):
    """One rendered file uploaded into the engine's directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str = Field(description="The file's text.")
    mode: int = Field(ge=0, le=0o7777, description="Its permission bits.")


class ReadinessCheck(BaseModel):
    """How the provider tells the engine on a node is ready (checked on the host)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serves_api: bool = Field(description="The node serves the API (else: it must stay up).")
    base_url: str = Field(description="The API's base URL as seen from the host itself.")
    paths: tuple[str, ...] = Field(description="Paths that must all answer 200.")
    served_name: str | None = Field(None, description="The model /v1/models must list.")
    timeout_s: int = Field(gt=0, description="Deadline for the engine to become ready.")


class EngineServiceProps(ProviderProps):
    """EngineService's properties: the rendered files, secrets and readiness check of one
    node (inputs; the secret environment is passed to :class:`EngineService` apart), the
    fingerprints ``check`` adds, and whether the engine runs (outputs)."""

    SECRET_FIELDS = ("secret_env",)

    host: HostTarget = Field(description="The node's host.")
    remote_dir: str = Field(description="The engine's directory on the host.")
    files: dict[str, RenderedFile] = Field(description="Rendered files by file name.")
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="Secret: environment written to secrets.env (0600)."
    )
    container: str | None = Field(None, description="The engine's container (docker).")
    readiness: ReadinessCheck = Field(description="When the engine counts as started.")
    files_hash: str | None = Field(
        None, description="Added by check: fingerprint of the files (restarts on change)."
    )
    secrets_hash: str | None = Field(
        None, description="Added by check: fingerprint of the secrets (restarts on change)."
    )
    running: bool | None = Field(None, description="Output: whether the engine runs.")
    started_at: str | None = Field(None, description="Output: when it was last started.")

    @model_validator(mode="before")
    @classmethod
    def _readiness_was_probe(cls, data: Any) -> Any:
        """State written before the rename holds the readiness check as ``probe``."""
        if isinstance(data, Mapping) and "probe" in data and "readiness" not in data:
            data = {("readiness" if k == "probe" else k): v for k, v in data.items()}
        return data


@dataclass(frozen=True)
class EngineServiceArgs:
    """An EngineService on the program side: its props, and its secret environment
    (there an Output, so not a value of the props model)."""

    props: EngineServiceProps
    secret_env: pulumi.Input[Mapping[str, str]]

    def inputs(self) -> dict[str, Any]:
        """The resource's inputs (what :class:`EngineService` registers, without its URN)."""
        return self.props.to_inputs(secret_env=self.secret_env)


class EngineServiceProvider(ResourceProvider):
    """Runs one node's engine. Stateless."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Add the content and secret fingerprints that drive diffs (on the raw inputs:
        they may hold unknowns during preview). The secrets' fingerprint is itself a
        secret input: a plain SHA-256 of a short key in the state could be guessed back."""
        inputs = dict(news)
        inputs["files_hash"] = fingerprint(news.get("files"))
        inputs["secrets_hash"] = rpc.wrap_rpc_secret(fingerprint(news.get("secret_env") or {}))
        return CheckResult(inputs=inputs, failures=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Upload, start and wait until ready.

        All-or-nothing: on any failure the engine is stopped and its directory removed,
        then EngineStartError is raised with the last lines of the engine log.
        """
        p = EngineServiceProps.from_inputs(props)
        with Progress.for_resource(props) as progress:
            _deploy(p, progress)
        return CreateResult(id_=f"{p.host.name}:{p.remote_dir}", outs=_outs(p))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Report whether the engine still runs (``running``): its supervisor reports it
        running and, on a node that serves the API, the health path answers 200 (an API
        server that died while its worker processes linger is not running). An engine
        its supervisor is restarting, or gave up on, is not running."""
        p = EngineServiceProps.from_inputs(props)
        layout = EngineLayout(p.remote_dir)
        with _open(p) as conn:
            running = _observe(conn, _supervisor(conn, layout, p), p.readiness)
        return ReadResult(id_=id_, outs=p.to_outputs(running=running))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Restart on changed content, secrets or readiness check; replace on another
        host/dir. Compares raw values (``news`` may hold unknowns)."""
        replaces = changed_keys(olds, news, REPLACE_ON)
        changes = replaces or changed_keys(olds, news, RESTART_ON)
        stopped = olds.get("running") is False
        return DiffResult(
            changes=bool(changes) or stopped, replaces=replaces, delete_before_replace=True
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Stop the running engine, upload the new files and start again."""
        p = EngineServiceProps.from_inputs(news)
        with Progress.for_resource(news) as progress:
            _deploy(p, progress)
        return UpdateResult(outs=_outs(p))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Stop the engine under whichever supervisor ran it (unit, container or
        supervisor loop) and remove its directory. Idempotent."""
        p = EngineServiceProps.from_inputs(props)
        layout = EngineLayout(p.remote_dir)
        with Progress.for_resource(props) as progress, _open(p) as conn:
            progress.step(f"stopping the engine and removing {layout.remote_dir}")
            _stop_and_remove(conn, layout, p)


class EngineService(pulumi.dynamic.Resource, module="amdfleet", name="EngineService"):
    """The engine on one node; ``running`` and the content fingerprints are outputs."""

    running: pulumi.Output[bool]
    started_at: pulumi.Output[str]
    files_hash: pulumi.Output[str]
    secrets_hash: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: EngineServiceProps,
        opts: pulumi.ResourceOptions | None = None,
        *,
        secret_env: pulumi.Input[Mapping[str, str]],
    ):
        hidden = pulumi.ResourceOptions(additional_secret_outputs=["secrets_hash", "secret_env"])
        opts = pulumi.ResourceOptions.merge(opts, hidden)
        inputs = props.to_inputs(
            secret_env=secret_env, resource_urn=resource_urn(name, "EngineService", opts)
        )
        super().__init__(EngineServiceProvider(), name, inputs, opts)


def _deploy(p: EngineServiceProps, progress: Progress) -> None:
    layout = EngineLayout(p.remote_dir)
    with _open(p) as conn:
        progress.step("stopping any engine already running there")
        _stop_and_remove(conn, layout, p)
        supervisor = _supervisor(conn, layout, p)
        try:
            progress.step(f"uploading {len(p.files)} files to {layout.remote_dir}")
            _upload(conn, layout, p.files, p.secret_env)
            progress.step(f"starting {layout.launch}")
            conn.run(supervisor.start_command(), timeout=_CALL_TIMEOUT)
            _wait(conn, supervisor, p, progress)
        except RemoteError as e:
            tail = conn.run(supervisor.log_tail_command(), timeout=_CALL_TIMEOUT, check=False)
            _stop_and_remove(conn, layout, p)
            raise _start_error(conn.host, layout, e, supervisor.log_source, tail.stdout) from e


def _open(p: EngineServiceProps) -> Connection:
    """A connection that masks the node's secrets in everything read back from the host
    (the engine log can print them: SGLang logs its whole configuration)."""
    return open_host(p.host, secrets=list(p.secret_env.values()))


def _supervisor(conn: Connection, layout: EngineLayout, p: EngineServiceProps) -> Supervisor:
    """The supervisor for this engine, chosen from the host's facts (a container name in
    the props means the docker runtime)."""
    facts = parse_facts(conn.run(FACTS_COMMAND, timeout=_CALL_TIMEOUT).stdout)
    kind = choose_supervisor("docker" if p.container else "process", facts)
    return supervisor_for(kind, layout, unit=_unit(p), container=p.container)


def _unit(p: EngineServiceProps) -> str:
    """The rendered systemd unit's file name (the process runtime renders one)."""
    names = [name for name in p.files if name.endswith(".service")]
    return names[0] if names else f"amdfleet-{PurePosixPath(p.remote_dir).name}.service"


def _upload(
    conn: Connection,
    layout: EngineLayout,
    files: Mapping[str, RenderedFile],
    secrets: Mapping[str, str],
) -> None:
    # 0700: the directory holds secrets.env and the engine log (which may quote secrets)
    directory = shlex.quote(layout.remote_dir)
    conn.run(f"mkdir -p {directory} && chmod 0700 {directory}", timeout=_CALL_TIMEOUT)
    for name in sorted(files):
        item = files[name]
        conn.put(layout.path(name), item.content.encode(), mode=item.mode)
    conn.put(layout.secrets, secrets_env(dict(secrets)).encode(), mode=0o600)


def _wait(
    conn: Connection, supervisor: Supervisor, p: EngineServiceProps, progress: Progress
) -> None:
    check = p.readiness
    api_key = p.secret_env.get("AMDFLEET_API_KEY")
    if not check.serves_api:
        progress.step(
            f"checking the engine stays up ({_WORKER_SETTLE_S:g} s; a worker serves no API)"
        )
        _wait_settled(conn, supervisor)
        progress.note("worker engine running (it serves no API)")
        return
    paths = check.paths
    started = time.monotonic()
    limit = check.timeout_s
    header = f"Authorization: Bearer {api_key}" if api_key else ""
    command = readiness_command(supervisor.first_run_command(), check.base_url, paths)
    interval = _POLL_FIRST_S
    while True:
        result = parse_readiness(conn.run(command, timeout=_CALL_TIMEOUT, stdin=header).stdout)
        if not result.alive:
            raise RemoteError(conn.host, "the engine exited during startup")
        if result.ready(paths, check.served_name):
            took = format_duration(time.monotonic() - started)
            progress.note(f"engine ready after {took}, serving {check.served_name}")
            return
        if progress.enabled:
            progress.status(
                _waiting_status(conn, supervisor, result, paths, time.monotonic() - started, limit)
            )
        if time.monotonic() >= started + limit:
            seen = ", ".join(f"{x} -> {result.statuses.get(x, (0, ''))[0]}" for x in paths)
            raise RemoteError(
                conn.host,
                f"the engine was not ready within {limit} s ({seen})",
                "raise engine.startup_timeout_s if the model is still loading",
            )
        time.sleep(interval)
        interval = min(interval * 2, _POLL_MAX_S)


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
    tail = conn.run(supervisor.log_tail_command(5), timeout=_CALL_TIMEOUT, check=False).stdout
    lines = [line for line in tail.splitlines() if line.strip()]
    return f"{text}; log: {lines[-1].strip()}" if lines else text


def _observe(conn: Connection, supervisor: Supervisor, check: ReadinessCheck) -> bool:
    """One look at a deployed engine: running, and healthy where it serves the API."""
    running = supervisor.running_command()
    if not check.serves_api:
        return conn.run(running, timeout=_CALL_TIMEOUT, check=False).ok
    paths = check.paths
    health = ("/health",) if "/health" in paths else paths[:1]
    command = readiness_command(running, check.base_url, health)
    output = conn.run(command, timeout=_CALL_TIMEOUT, stdin="", check=False).stdout
    return parse_readiness(output).ready(health)


def _wait_settled(conn: Connection, supervisor: Supervisor) -> None:
    """A worker node serves no API: it must stay running, never restarted, for the settle
    time."""
    deadline = time.monotonic() + _WORKER_SETTLE_S
    command = supervisor.first_run_command()
    while True:
        if not conn.run(command, timeout=_CALL_TIMEOUT, check=False).ok:
            raise RemoteError(conn.host, "the engine exited during startup")
        if time.monotonic() >= deadline:
            return
        time.sleep(_POLL_FIRST_S)


def _stop_and_remove(conn: Connection, layout: EngineLayout, p: EngineServiceProps) -> None:
    stop = stop_any_command(layout, unit=_unit(p), container=p.container)
    conn.run(stop, timeout=_STOP_TIMEOUT)
    conn.run(remove_command(layout), timeout=_CALL_TIMEOUT)


def _start_error(
    host: str, layout: EngineLayout, cause: RemoteError, source: str, tail: str
) -> EngineStartError:
    lines = "\n".join(f"    | {line}" for line in tail.splitlines()[-40:]) or "    | (empty log)"
    reason = str(cause).removeprefix(f"[{host}] ")
    return EngineStartError(
        host,
        f"engine failed to start: {reason}\n  command: {layout.launch}\n"
        f"  last lines of {source}:\n{lines}",
        "fix the cause above and run `pulumi up` again; nothing was left running",
    )


def _outs(p: EngineServiceProps) -> dict[str, Any]:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return p.to_outputs(running=True, started_at=started)
