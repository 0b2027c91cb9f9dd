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

from amdfleet.errors import EngineStartError, RemoteError
from amdfleet.providers.progress import URN_KEY, Progress, format_duration, resource_urn
from amdfleet.providers.props import as_int, changed_keys, fingerprint, plain
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

RESTART_ON = ("files_hash", "secrets_hash", "probe")
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


class EngineServiceProvider(ResourceProvider):
    """Runs one node's engine. Stateless."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Add the content and secret fingerprints that drive diffs."""
        inputs = dict(news)
        inputs["files_hash"] = fingerprint(news.get("files"))
        inputs["secrets_hash"] = fingerprint(news.get("secret_env") or {})
        return CheckResult(inputs=inputs, failures=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Upload, start and wait until ready.

        All-or-nothing: on any failure the engine is stopped and its directory removed,
        then EngineStartError is raised with the last lines of the engine log.
        """
        props = plain(props)
        _deploy(props)
        return CreateResult(id_=f"{props['host']['name']}:{props['remote_dir']}", outs=_outs(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Report whether the engine still runs (``running``): its supervisor reports it
        running and, on a node that serves the API, the health path answers 200 (an API
        server that died while its worker processes linger is not running). An engine
        its supervisor is restarting, or gave up on, is not running."""
        props = plain(props)
        layout = EngineLayout(props["remote_dir"])
        with open_host(props["host"]) as conn:
            running = _observe(conn, _supervisor(conn, layout, props), props["probe"])
        return ReadResult(id_=id_, outs={**props, "running": running})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Restart on changed content, secrets or probe; replace on another host/dir."""
        replaces = changed_keys(olds, news, REPLACE_ON)
        changes = replaces or changed_keys(olds, news, RESTART_ON)
        stopped = olds.get("running") is False
        return DiffResult(
            changes=bool(changes) or stopped, replaces=replaces, delete_before_replace=True
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Stop the running engine, upload the new files and start again."""
        news = plain(news)
        _deploy(news)
        return UpdateResult(outs=_outs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Stop the engine under whichever supervisor ran it (unit, container or
        supervisor loop) and remove its directory. Idempotent."""
        props = plain(props)
        layout = EngineLayout(props["remote_dir"])
        with Progress.for_resource(props) as progress, open_host(props["host"]) as conn:
            progress.step(f"stopping the engine and removing {layout.remote_dir}")
            _stop_and_remove(conn, layout, props)


class EngineService(pulumi.dynamic.Resource, module="amdfleet", name="EngineService"):
    """The engine on one node; ``running`` and the content fingerprints are outputs."""

    running: pulumi.Output[bool]
    started_at: pulumi.Output[str]
    files_hash: pulumi.Output[str]
    secrets_hash: pulumi.Output[str]

    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ):
        outputs = {"running": None, "started_at": None, "files_hash": None, "secrets_hash": None}
        hidden = pulumi.ResourceOptions(additional_secret_outputs=["secrets_hash", "secret_env"])
        opts = pulumi.ResourceOptions.merge(opts, hidden)
        urn = {URN_KEY: resource_urn(name, "EngineService", opts)}
        super().__init__(EngineServiceProvider(), name, {**props, **outputs, **urn}, opts)


def _deploy(props: dict[str, Any]) -> None:
    layout = EngineLayout(props["remote_dir"])
    secret_env = props.get("secret_env") or {}
    with (
        Progress.for_resource(props) as progress,
        open_host(props["host"], secrets=list(secret_env.values())) as conn,
    ):
        progress.step("stopping any engine already running there")
        _stop_and_remove(conn, layout, props)
        try:
            progress.step(f"uploading {len(props['files'])} files to {layout.remote_dir}")
            _upload(conn, layout, props["files"], secret_env)
            supervisor = _supervisor(conn, layout, props)
            progress.step(f"starting {layout.launch}")
            conn.run(supervisor.start_command(), timeout=_CALL_TIMEOUT)
            _wait(conn, supervisor, props, progress)
        except RemoteError as e:
            tail = _log_tail(conn, layout, props)
            _stop_and_remove(conn, layout, props)
            raise _start_error(conn.host, layout, e, tail) from e


def _supervisor(conn: Connection, layout: EngineLayout, props: dict[str, Any]) -> Supervisor:
    """The supervisor for this engine, chosen from the host's facts (a container name in
    the props means the docker runtime)."""
    facts = parse_facts(conn.run(FACTS_COMMAND, timeout=_CALL_TIMEOUT).stdout)
    container = props.get("container")
    kind = choose_supervisor("docker" if container else "process", facts)
    return supervisor_for(kind, layout, unit=_unit(props), container=container)


def _unit(props: dict[str, Any]) -> str:
    """The rendered systemd unit's file name (the process runtime renders one)."""
    names = [name for name in props.get("files") or {} if name.endswith(".service")]
    return names[0] if names else f"amdfleet-{PurePosixPath(props['remote_dir']).name}.service"


def _log_tail(conn: Connection, layout: EngineLayout, props: dict[str, Any]) -> str:
    """The engine's last log lines, read through the supervisor the host calls for."""
    try:
        supervisor = _supervisor(conn, layout, props)
    except RemoteError:
        return ""
    return conn.run(supervisor.log_tail_command(), timeout=_CALL_TIMEOUT, check=False).stdout


def _upload(
    conn: Connection, layout: EngineLayout, files: dict[str, Any], secrets: dict[str, str]
) -> None:
    conn.run(f"mkdir -p {shlex.quote(layout.remote_dir)}", timeout=_CALL_TIMEOUT)
    for name in sorted(files):
        item = files[name]
        conn.put(layout.path(name), str(item["content"]).encode(), mode=as_int(item["mode"]))
    conn.put(layout.secrets, secrets_env(secrets).encode(), mode=0o600)


def _wait(
    conn: Connection, supervisor: Supervisor, props: dict[str, Any], progress: Progress
) -> None:
    probe = props["probe"]
    api_key = (props.get("secret_env") or {}).get("AMDFLEET_API_KEY")
    if not probe.get("serves_api"):
        progress.step(
            f"checking the engine stays up ({_WORKER_SETTLE_S:g} s; a worker serves no API)"
        )
        _wait_settled(conn, supervisor)
        progress.note("worker engine running (it serves no API)")
        return
    paths = tuple(probe["paths"])
    started = time.monotonic()
    limit = as_int(probe["timeout_s"])
    header = f"Authorization: Bearer {api_key}" if api_key else ""
    command = readiness_command(supervisor.first_run_command(), probe["base_url"], paths)
    interval = _POLL_FIRST_S
    while True:
        result = parse_readiness(conn.run(command, timeout=_CALL_TIMEOUT, stdin=header).stdout)
        if not result.alive:
            raise RemoteError(conn.host, "the engine exited during startup")
        if result.ready(paths, probe.get("served_name")):
            took = format_duration(time.monotonic() - started)
            progress.note(f"engine ready after {took}, serving {probe.get('served_name')}")
            return
        if progress.enabled:
            progress.status(
                _waiting_status(conn, supervisor, result, paths, time.monotonic() - started, limit)
            )
        if time.monotonic() >= started + limit:
            seen = ", ".join(f"{p} -> {result.statuses.get(p, (0, ''))[0]}" for p in paths)
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


def _observe(conn: Connection, supervisor: Supervisor, probe: dict[str, Any]) -> bool:
    """One look at a deployed engine: running, and healthy where it serves the API."""
    running = supervisor.running_command()
    if not probe.get("serves_api"):
        return conn.run(running, timeout=_CALL_TIMEOUT, check=False).ok
    paths = tuple(probe["paths"])
    health = ("/health",) if "/health" in paths else paths[:1]
    command = readiness_command(running, probe["base_url"], health)
    output = conn.run(command, timeout=_CALL_TIMEOUT, stdin="", check=False).stdout
    result = parse_readiness(output)
    return result.ready(health)


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


def _stop_and_remove(conn: Connection, layout: EngineLayout, props: dict[str, Any]) -> None:
    stop = stop_any_command(layout, unit=_unit(props), container=props.get("container"))
    conn.run(stop, timeout=_STOP_TIMEOUT)
    conn.run(remove_command(layout), timeout=_CALL_TIMEOUT)


def _start_error(
    host: str, layout: EngineLayout, cause: RemoteError, tail: str
) -> EngineStartError:
    lines = "\n".join(f"    | {line}" for line in tail.splitlines()[-40:]) or "    | (empty log)"
    reason = str(cause).removeprefix(f"[{host}] ")
    return EngineStartError(
        host,
        f"engine failed to start: {reason}\n  command: {layout.launch}\n"
        f"  last lines of {layout.log}:\n{lines}",
        "fix the cause above and run `pulumi up` again; nothing was left running",
    )


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    public = {k: v for k, v in props.items() if k != "secret_env"}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return {**public, "running": True, "started_at": started}
