"""Adopting an engine that is already running: ``pulumi import`` of an EngineService.

On an import (``pulumi import``, or a stack's ``engine.adopt`` passed as the resource's
``import_`` option) the Pulumi engine (v3.274) calls the provider's Read with the import
id alone: no inputs, no earlier outputs. The id names the host and the engine:
``<host>:<port>``, ``<host>`` a ``name`` in the stack's ``fleet.hosts`` (how to reach it
comes from the stack's ``amdfleet:fleet`` config, which Pulumi hands the provider when it
configures it) and ``<port>`` the TCP port the engine serves on. :func:`adopt` finds the
process listening there and records it (pid, start time, command line with any
``--api-key`` value masked, a SHA-256 of its API key) as the resource's ``adopted``
output, nothing more: reading changes nothing on the host.

Pulumi then diffs the program's inputs against that state (:func:`adoption_diff`): the
running engine matches the stack when it runs the stack's executable with the same
arguments (flags in any order, ``--flag=value`` or ``--flag value``) and the stack's API
key. Then nothing restarts: the engine keeps running as it was started, unsupervised,
and amdfleet refreshes, verifies and destroys it (by pid). When it differs, the update
lists every difference and restarts it the stack's way, under amdfleet's supervisor; a
``pulumi preview`` shows that before anything happens.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pulumi.dynamic import DiffResult
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from amdfleet.config import FleetSpec
from amdfleet.engines import REGISTRY
from amdfleet.errors import ConfigError, RemoteError
from amdfleet.findings import config_issue
from amdfleet.plan.models import REMOTE_ROOT
from amdfleet.providers.props import changed_keys, plain
from amdfleet.pydantic_issues import validation_issues
from amdfleet.remote import adoption as facts
from amdfleet.remote.transport.target import HostTarget

ID_RE = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<port>[0-9]{1,5})$")
ID_FORMAT = "<host>:<port>"
LAUNCH_SCRIPT = "launch.sh"
SECRET_FLAGS = ("--api-key",)
KEY_VARS = tuple(sorted({e.api_key_env for e in REGISTRY.values() if e.api_key_env}))
"""The API-key variables of every engine amdfleet knows (VLLM_API_KEY)."""
ADOPT_TIMEOUT_S = 600
"""The readiness deadline recorded for an adopted engine (it is already serving)."""


class AdoptedEngine(BaseModel):
    """The engine amdfleet adopted and did not start: how to recognize and stop it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int = Field(description="Its process id on the host.")
    started: str = Field(description="Its start time (`ps -o lstart`): guards the pid.")
    port: int = Field(description="The port it serves on.")
    argv: tuple[str, ...] = Field(description="Its command line, API key values masked.")
    key_hashes: dict[str, str] = Field(
        default_factory=dict,
        description="Secret: SHA-256 of its API key, by variable (what the stack's key is "
        "compared with).",
    )


def parse_id(id_: str, hosts: Mapping[str, HostTarget]) -> tuple[HostTarget, int]:
    """The host and port an import id names.

    Raises ConfigError naming the id, what it must look like and the hosts it may name.
    """
    match = ID_RE.match(id_)
    known = ", ".join(sorted(hosts)) or "none: fleet.hosts is empty"
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(
            [
                config_issue(
                    "import id",
                    f"{id_!r} is not an engine id: expected {ID_FORMAT}, e.g. gpu-1:8000",
                    f"<host> is the name of one of the stack's fleet.hosts ({known}), <port> "
                    "the port the engine serves on (1-65535)",
                )
            ]
        )
    if match["host"] not in hosts:
        raise ConfigError(
            [
                config_issue(
                    "import id",
                    f"{id_!r} names host {match['host']!r}, which is not in the stack's "
                    "fleet.hosts",
                    f"use one of: {known} (amdfleet reaches a host only as the stack "
                    "declares it: address, user, key and pinned host key)",
                )
            ]
        )
    return hosts[match["host"]], int(match["port"])


def hosts_from_config(fleet: Any) -> dict[str, HostTarget]:
    """The hosts of a stack's ``fleet`` config value (its JSON text or the parsed value),
    by name; none for a cloud fleet."""
    value = json.loads(fleet) if isinstance(fleet, str) else plain(fleet)
    if not isinstance(value, dict):
        return {}
    try:
        spec = FleetSpec.model_validate(value)
    except ValidationError as e:
        issues = validation_issues(e, FleetSpec, where="fleet")
        raise ConfigError([replace(i, subject=f"fleet.{i.subject}") for i in issues]) from e
    return {h.name: HostTarget.from_spec(h) for h in spec.hosts or ()}


def stack_of(urn: str) -> str:
    """The stack name in a URN (``urn:pulumi:<stack>::<project>::...``)."""
    return urn.split("::", 1)[0].rsplit(":", 1)[-1]


def observed_state(
    host: HostTarget, port: int, found: facts.EngineFacts, stack: str
) -> dict[str, Any]:
    """The EngineService state of an engine found running: the props a read returns as
    inputs and outputs (the ``adopted`` record, whether it serves, since when)."""
    args = found.argv
    hashes = dict(found.key_hashes)
    given = _flag_value(args, "--api-key")
    if given is not None and KEY_VARS:
        hashes.setdefault(KEY_VARS[0], facts.key_hash(given))
    adopted = AdoptedEngine(
        pid=found.pid,
        started=found.started,
        port=port,
        argv=facts.masked_argv(args, SECRET_FLAGS),
        key_hashes=hashes,
    )
    listen = _flag_value(args, "--host") or "127.0.0.1"
    if listen in ("0.0.0.0", "::", ""):
        listen = "127.0.0.1"
    served = _flag_value(args, "--served-model-name") or _model_of(args)
    return {
        "host": host.model_dump(mode="json"),
        "remote_dir": f"{REMOTE_ROOT}/{stack}",
        "files": {},
        "container": None,
        "readiness": {
            "serves_api": True,
            "base_url": f"http://{_bracketed(listen)}:{port}",
            "paths": ["/health", "/v1/models"],
            "served_name": served,
            "timeout_s": ADOPT_TIMEOUT_S,
        },
        "adopted": adopted.model_dump(mode="json"),
    }


def not_found(host: HostTarget, port: int) -> RemoteError:
    """Nothing listens on the port an import id names."""
    return RemoteError(
        host.name,
        f"no process listens on port {port}: there is no engine to adopt",
        f"start the engine first, or check the port in the import id ({ID_FORMAT})",
    )


def missing_tool(host: HostTarget, command: str) -> RemoteError:
    """The host lacks a command adoption runs."""
    package = "iproute2" if command == "ss" else "procps"
    return RemoteError(
        host.name,
        f"`{command}` is not installed: amdfleet finds, checks and stops an adopted engine "
        "with ss, ps and pkill",
        f"install {package} on the host (apt-get install {package}), then import again",
    )


def adoption_diff(olds: Mapping[str, Any], news: Mapping[str, Any]) -> tuple[DiffResult, list[str]]:
    """The diff of an adopted engine (``olds`` holds ``adopted``) against the program's
    inputs, and what differs: another host replaces it; a running engine that runs the
    stack's command with the stack's API key is left as it is; anything else (it differs,
    or refresh found it not running) restarts it the stack's way."""
    replaces = changed_keys(olds, news, ("host",))
    if replaces:
        return DiffResult(changes=True, replaces=replaces, delete_before_replace=True), []
    if olds.get("running") is False:
        return DiffResult(changes=True, replaces=[], delete_before_replace=True), [
            "the adopted engine no longer runs"
        ]
    differences = differences_from_stack(plain(olds["adopted"]), news)
    return DiffResult(changes=bool(differences), replaces=[], delete_before_replace=True), (
        differences
    )


def differences_from_stack(adopted: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Every way the adopted engine differs from what the stack would run (empty: none)."""
    if news.get("container") not in (None, ""):
        return ["the stack runs the engine in a container (engine.runtime docker)"]
    files = news.get("files")
    if isinstance(files, Unknown) or files is None:
        return ["the stack's launch files are not known yet"]
    wanted = launch_command(plain(files))
    if wanted is None:
        return [f"the stack's files have no {LAUNCH_SCRIPT} that runs the engine directly"]
    executable, wanted_args = wanted
    argv = tuple(adopted.get("argv") or ())
    running = facts.serve_arguments(argv, executable)
    if running is None:
        return [f"executable: running {' '.join(argv[:2])!r}, stack {executable!r}"]
    out = facts.command_differences(_without_key(running), _without_key(wanted_args))
    return out + _key_differences(adopted, news.get("secret_env"))


def launch_command(files: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """The executable and arguments of the ``exec`` line of a rendered process-runtime
    launch script (None: no such line)."""
    script = files.get(LAUNCH_SCRIPT)
    content = script.get("content") if isinstance(script, Mapping) else None
    if not isinstance(content, str):
        return None
    lines = content.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("exec "):
            continue
        block = [line]
        while block[-1].rstrip().endswith("\\") and i + len(block) < len(lines):
            block.append(lines[i + len(block)])
        words = shlex.split(" ".join(part.rstrip().removesuffix("\\") for part in block))
        if len(words) < 2 or words[1] == "docker":
            return None
        return words[1], tuple(words[2:])
    return None


def _key_differences(adopted: Mapping[str, Any], secret_env: Any) -> list[str]:
    env = plain(secret_env)
    if not isinstance(env, Mapping):
        return []
    hashes = adopted.get("key_hashes") or {}
    out = []
    for name in KEY_VARS:
        value = env.get(name)
        if isinstance(value, Unknown):
            continue
        have = hashes.get(name)
        if value is None and have is None:
            continue
        if value is None:
            out.append(f"API key ({name}): set on the running engine, not in the stack")
        elif have is None:
            out.append(f"API key ({name}): not set on the running engine")
        elif have != facts.key_hash(str(value)):
            out.append(f"API key ({name}): the running engine's differs from the stack's")
    return out


def _without_key(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` without ``--api-key`` (compared as a key, not as a flag: the stack passes
    it in the environment)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            skip = not eq
            continue
        out.append(arg)
    return tuple(out)


def _flag_value(args: tuple[str, ...], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def _model_of(args: tuple[str, ...]) -> str | None:
    """``vllm serve MODEL``'s model (the first argument after ``serve``)."""
    for i, arg in enumerate(args[:-1]):
        if arg == "serve" and not args[i + 1].startswith("-"):
            return args[i + 1]
    return None


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def wrap_key_hashes(outputs: dict[str, Any]) -> dict[str, Any]:
    """``outputs`` with ``adopted.key_hashes`` marked secret (a SHA-256 of a short key in
    the state could be guessed back)."""
    adopted = outputs.get("adopted")
    if isinstance(adopted, dict) and adopted.get("key_hashes"):
        adopted = {**adopted, "key_hashes": rpc.wrap_rpc_secret(adopted["key_hashes"])}
        return {**outputs, "adopted": adopted}
    return outputs
