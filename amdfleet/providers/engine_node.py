"""One node's engine over an open connection: the steps EngineService (one node) and
EngineCluster (several) share.

Each function runs the command builders of :mod:`amdfleet.remote.engine` and
:mod:`amdfleet.remote.supervision` over a :class:`~amdfleet.remote.transport.connection.Connection`
the provider opened with :func:`open_engine_host` (which masks the node's secrets in
everything read back). Nothing here keeps state between calls.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from pulumi.dynamic import DiffResult
from pulumi.runtime import rpc
from pydantic import BaseModel, ConfigDict, Field

from amdfleet.engines import tokens_counters
from amdfleet.errors import EngineStartError, RemoteError
from amdfleet.providers.props import ProviderProps, changed_keys, fingerprint
from amdfleet.remote.engine import (
    EngineLayout,
    generation_command,
    parse_generation,
    parse_readiness,
    readiness_command,
    remove_command,
    secrets_env,
)
from amdfleet.remote.supervision import (
    FACTS_COMMAND,
    Supervisor,
    Watchdog,
    choose_supervisor,
    parse_facts,
    stop_any_command,
    supervisor_for,
)
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

CALL_TIMEOUT = 60.0
# Stopping may wait out the engine's grace under each supervisor that could have run it.
STOP_TIMEOUT = 150.0
# A one-token completion on a loaded engine takes well under a second; a pipeline with a
# dead stage never answers (ENVIRONMENT.md), so this is the deadline for the answer.
GENERATION_TIMEOUT_S = 60
LOG_TAIL_LINES = 40
# A loaded engine completes one token in well under a second; a watchdog probe that waits
# longer only delays noticing a hung pipeline.
WATCHDOG_PROBE_TIMEOUT_S = 15
# The deploy's own readiness wait ends before the watchdog would call a start failed.
WATCHDOG_STARTUP_GRACE_S = 60
RESTART_ON = ("files_hash", "secrets_hash", "readiness")
"""Inputs whose change restarts an engine (its fingerprints and its readiness check)."""


class EngineFile(BaseModel):
    """One file uploaded into the engine's directory (a rendered launch file, cluster.env)."""

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
    generation_timeout_s: int = Field(
        GENERATION_TIMEOUT_S,
        gt=0,
        description="Deadline for the one-token completion that proves the engine serves.",
    )


class EngineProps(ProviderProps):
    """What both engine resources (one node, or a cluster) have: the secret environment
    (passed to the resource apart: an Output in the program), the fingerprints ``check``
    adds, and whether the engine serves (outputs)."""

    SECRET_FIELDS = ("secret_env",)
    SECRET_OUTPUTS = ("secrets_hash",)

    secret_env: dict[str, str] = Field(
        default_factory=dict, description="Secret: environment written to secrets.env (0600)."
    )
    files_hash: str | None = Field(
        None,
        description="Added by check: fingerprint of the rendered files (on a cluster, every "
        "node's files and env); restarts on change.",
    )
    secrets_hash: str | None = Field(
        None, description="Added by check: fingerprint of the secrets (restarts on change)."
    )
    running: bool | None = Field(None, description="Output: whether the engine serves.")
    started_at: str | None = Field(None, description="Output: when it was last started.")
    not_ready: str | None = Field(
        None, description="Output of refresh: why the engine does not serve (None: it does)."
    )

    def started_outputs(self) -> dict[str, Any]:
        """The outputs of a create or update that started the engine: running since now."""
        started = datetime.now(UTC).isoformat(timespec="seconds")
        return self.to_outputs(running=True, started_at=started, not_ready=None)


def with_fingerprints(news: Mapping[str, Any], content_key: str) -> dict[str, Any]:
    """``news`` plus the fingerprints that drive an engine's diffs: ``files_hash`` of
    ``news[content_key]`` and ``secrets_hash`` of the secret environment (on the raw
    inputs: they may hold unknowns in a preview). The secrets' fingerprint is itself
    secret: a plain SHA-256 of a short key in the state could be guessed back."""
    inputs = dict(news)
    inputs["files_hash"] = fingerprint(news.get(content_key))
    inputs["secrets_hash"] = rpc.wrap_rpc_secret(fingerprint(news.get("secret_env") or {}))
    return inputs


def engine_diff(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    replaces: list[str],
    restart_on: tuple[str, ...] = RESTART_ON,
) -> DiffResult:
    """Replace when ``replaces`` names anything, else restart on a changed ``restart_on``
    key or when refresh found the engine not running. Compares raw values (``news`` may
    hold unknowns)."""
    changed = replaces or changed_keys(olds, news, restart_on)
    stopped = olds.get("running") is False
    return DiffResult(
        changes=bool(changed) or stopped, replaces=replaces, delete_before_replace=True
    )


def open_engine_host(host: HostTarget, secrets: Mapping[str, str]) -> Connection:
    """A connection that masks the node's secrets in everything read back from the host
    (the engine log can print them: SGLang logs its whole configuration)."""
    return open_host(host, secrets=list(secrets.values()))


def unit_name(files: Mapping[str, object], remote_dir: str) -> str:
    """The rendered systemd unit's file name (the process runtime renders one)."""
    names = [name for name in files if name.endswith(".service")]
    return names[0] if names else f"amdfleet-{PurePosixPath(remote_dir).name}.service"


def node_supervisor(
    conn: Connection,
    layout: EngineLayout,
    unit: str,
    container: str | None,
    check: ReadinessCheck | None = None,
    *,
    timeout: float = CALL_TIMEOUT,
) -> Supervisor:
    """The supervisor for this engine, chosen from the host's facts (a container name
    means the docker runtime); with a readiness ``check`` of the API to watch, its
    watchdog too (:func:`watchdog_for`); ``timeout`` bounds the facts command."""
    facts = parse_facts(conn.run(FACTS_COMMAND, timeout=timeout).stdout)
    kind = choose_supervisor("docker" if container else "process", facts)
    watchdog = watchdog_for(check, layout) if check is not None else None
    return supervisor_for(kind, layout, unit=unit, container=container, watchdog=watchdog)


def watchdog_for(check: ReadinessCheck, layout: EngineLayout) -> Watchdog | None:
    """The watchdog of the engine in ``layout``, probing the API ``check`` describes (the
    head's: on a worker, at the head's address): it restarts the engine when that API
    stopped completing tokens, or completed none within the readiness deadline plus
    :data:`WATCHDOG_STARTUP_GRACE_S` (None for a check without an API or a model name).
    A probe that fails while the engines' generated-tokens counters grow does not count
    (a busy head, not a hung one)."""
    if not check.serves_api or check.served_name is None:
        return None
    probe = min(check.generation_timeout_s, WATCHDOG_PROBE_TIMEOUT_S)
    return Watchdog(
        base_url=check.base_url,
        served_name=check.served_name,
        secrets_file=layout.secrets,
        startup_s=check.timeout_s + WATCHDOG_STARTUP_GRACE_S,
        probe_timeout_s=probe,
        progress_counters=tokens_counters(),
    )


def upload(
    conn: Connection,
    layout: EngineLayout,
    files: Mapping[str, EngineFile],
    secrets: Mapping[str, str],
) -> None:
    """Create the engine directory (0700: it holds secrets.env and the engine log, which
    may quote secrets), upload the rendered files with their modes and secrets.env
    (0600 from its creation)."""
    directory = shlex.quote(layout.remote_dir)
    conn.run(f"mkdir -p {directory} && chmod 0700 {directory}", timeout=CALL_TIMEOUT)
    for name in sorted(files):
        item = files[name]
        conn.put(layout.path(name), item.content.encode(), mode=item.mode)
    conn.put(layout.secrets, secrets_env(dict(secrets)).encode(), mode=0o600)


def stop_and_remove(
    conn: Connection, layout: EngineLayout, unit: str, container: str | None
) -> None:
    """Stop the engine under whichever supervisor ran it and remove its directory.
    Idempotent."""
    conn.run(stop_any_command(layout, unit=unit, container=container), timeout=STOP_TIMEOUT)
    conn.run(remove_command(layout), timeout=CALL_TIMEOUT)


def log_tail(conn: Connection, supervisor: Supervisor, lines: int = LOG_TAIL_LINES) -> str:
    """The engine log's last ``lines``, each indented as ``    | line`` (never raises)."""
    try:
        out = conn.run(supervisor.log_tail_command(lines), timeout=CALL_TIMEOUT, check=False)
    except RemoteError as e:
        return f"    | (the log could not be read: {e})"
    text = out.stdout.splitlines()[-lines:]
    return "\n".join(f"    | {line}" for line in text) or "    | (empty log)"


def serving_problem(conn: Connection, supervisor: Supervisor, check: ReadinessCheck) -> str | None:
    """One look at a deployed engine: None when it serves, else why not.

    A node that serves no API must have its engine running. The head must run, answer
    its health path 200 and complete one real token within ``generation_timeout_s``:
    ``/health`` alone answers 200 on a head whose pipeline lost a stage. An engine that
    is not running is reported with its supervisor's line when that gave up restarting
    it (:meth:`~amdfleet.remote.supervision.Supervisor.gave_up_command`).
    """
    running = supervisor.running_command()
    if not check.serves_api:
        ok = conn.run(running, timeout=CALL_TIMEOUT, check=False).ok
        return None if ok else _not_running(conn, supervisor)
    paths = check.paths
    health = ("/health",) if "/health" in paths else paths[:1]
    command = readiness_command(running, check.base_url, health)
    result = parse_readiness(conn.run(command, timeout=CALL_TIMEOUT, stdin="").stdout)
    if not result.alive:
        return _not_running(conn, supervisor)
    if not result.ready(health):
        return f"{health[0]} answered {result.statuses.get(health[0], (0, ''))[0] or 'nothing'}"
    return generation_problem(conn, supervisor.layout, check)


def _not_running(conn: Connection, supervisor: Supervisor) -> str:
    """``the engine is not running``, with the supervisor's word when it gave up."""
    gave_up = conn.run(supervisor.gave_up_command(), timeout=CALL_TIMEOUT, check=False)
    line = gave_up.stdout.strip()
    return f"the engine is not running: {line}" if line else "the engine is not running"


def generation_problem(conn: Connection, layout: EngineLayout, check: ReadinessCheck) -> str | None:
    """A one-token completion on the head (keyed with the API key in the engine's
    ``secrets.env`` on the host): None when it answered in time, else why not."""
    if check.served_name is None:
        return None
    limit = check.generation_timeout_s
    command = generation_command(check.base_url, check.served_name, limit, layout.secrets)
    out = conn.run(command, timeout=limit + CALL_TIMEOUT)
    result = parse_generation(out.stdout)
    return None if result.ok else result.describe(limit)


def start_error(
    host: str, layout: EngineLayout, cause: RemoteError, source: str, tail: str, hint: str
) -> EngineStartError:
    """The error for an engine that failed to start: the cause, the launch command and the
    last lines of its log (``tail`` as :func:`log_tail` formats it)."""
    reason = str(cause).removeprefix(f"[{host}] ")
    return EngineStartError(
        host,
        f"engine failed to start: {reason}\n  command: {layout.launch}\n"
        f"  last lines of {source}:\n{tail}",
        hint,
    )
