"""SshHost: a host of the fleet, its collected facts, and its preflight.

Creating an SshHost changes nothing on the host: it connects with the pinned host key,
runs the read-only probe script, and fails with every failed preflight check of the host
(GPUs, devices, groups, shm, NUMA balancing, disk room, container runtime), each with a
hint. ``read`` re-collects the facts, so ``pulumi refresh`` shows drift.

Progress (:mod:`amdfleet.providers.progress`): the resource's status shows the connection
and the probe as they happen; a passed create or update leaves a note with what the host
is (OS, GPUs, ROCm) and how many checks passed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from amdfleet.errors import PreflightError, RemoteCommandError
from amdfleet.providers.progress import URN_KEY, Progress, resource_urn, urn_input
from amdfleet.providers.props import as_int, changed_keys, plain
from amdfleet.remote.facts import HostFacts
from amdfleet.remote.hosts import open_host
from amdfleet.remote.preflight import HostRequirement, PreflightCheck, check_host
from amdfleet.remote.probe import build_probe_script, parse_probe_output, probe_time_limit

INPUTS = ("host", "requirement")


class SshHostProvider(ResourceProvider):
    """Connects, collects facts and runs preflight. Stateless; creates nothing remotely."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Collect facts and run preflight.

        Raises PreflightError listing every failed check (with hints), RemoteError or
        HostKeyMismatchError when the host cannot be reached safely. Idempotent.
        """
        with Progress.for_resource(props) as progress:
            outs = _inspect(props, progress, enforce=True)
        return CreateResult(id_=str(plain(props["host"])["name"]), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-collect the facts (drift shows in ``pulumi refresh``); never fails on
        preflight, only records the checks."""
        with Progress.for_resource(props) as progress:
            return ReadResult(id_=id_, outs=_inspect(props, progress, enforce=False))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A changed address or user is another host (replace); a changed requirement
        re-runs preflight (update)."""
        changes = changed_keys(olds, news, INPUTS)
        replaces = ["host"] if "host" in changes else []
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Re-run preflight against the new requirement."""
        with Progress.for_resource(news) as progress:
            return UpdateResult(outs=_inspect(news, progress, enforce=True))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove: an SshHost never changes its host."""


class SshHost(pulumi.dynamic.Resource, module="amdfleet", name="SshHost"):
    """A fleet host; outputs ``facts`` (HostFacts as a dict) and ``checks``."""

    facts: pulumi.Output[dict[str, Any]]
    checks: pulumi.Output[list[dict[str, Any]]]
    hostname: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        host: dict[str, Any],
        requirement: HostRequirement,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "host": host,
            "requirement": asdict(requirement),
            "facts": None,
            "checks": None,
            "hostname": None,
            URN_KEY: resource_urn(name, "SshHost", opts),
        }
        super().__init__(SshHostProvider(), name, props, opts)


def _inspect(props: dict[str, Any], progress: Progress, enforce: bool) -> dict[str, Any]:
    host = plain(props["host"])
    requirement = _requirement(plain(props["requirement"]))
    script = build_probe_script(requirement.weights_dir or "/")
    progress.step(f"connecting to {_where(host)}")
    with open_host(host) as conn:
        progress.step("collecting facts (OS, CPU, memory, disk, GPUs, ROCm, docker)")
        result = conn.run("sh -s", stdin=script, timeout=probe_time_limit(), check=True)
    try:
        facts = parse_probe_output(result.stdout)
    except ValueError as e:
        raise RemoteCommandError(
            conn.host,
            "sh -s (fact probe)",
            result.exit_code,
            result.tail(),
            "the host's /bin/sh did not run the probe; is it a POSIX system?",
        ) from e
    progress.step("running preflight checks")
    checks = check_host(facts, requirement)
    failed = [c for c in checks if not c.ok]
    if enforce and failed:
        raise PreflightError([(conn.host, f"{c.name}: {c.detail}", c.hint) for c in failed])
    if enforce:
        progress.note(_summary(facts, checks))
    return {
        **urn_input(props),
        "host": host,
        "requirement": asdict(requirement),
        "facts": facts.to_dict(),
        "checks": [c.to_dict() for c in checks],
        "hostname": facts.hostname,
    }


def _requirement(data: dict[str, Any]) -> HostRequirement:
    return HostRequirement(
        accelerator=str(data["accelerator"]),
        gpu_count=as_int(data["gpu_count"]),
        runtime=data.get("runtime", "docker"),
        min_shm_bytes=as_int(data.get("min_shm_bytes", 0)),
        weights_dir=str(data.get("weights_dir", "")),
        weights_bytes=as_int(data.get("weights_bytes", 0)),
        numa_balancing_off=bool(data.get("numa_balancing_off", True)),
    )


def _where(host: dict[str, Any]) -> str:
    if host.get("connection") == "local":
        return "this machine"
    return f"{host.get('user', 'root')}@{host.get('address')}:{as_int(host.get('port', 22))}"


def _summary(facts: HostFacts, checks: list[PreflightCheck]) -> str:
    """``node-1: Ubuntu 22.04, 8x MI300X (gfx942), ROCm 6.2.0; preflight passed (9 checks)``"""
    parts = [facts.os_name or "unknown OS"]
    if facts.gpus:
        first = facts.gpus[0]
        model = first.accelerator.upper() if first.accelerator else first.market_name or "GPU"
        parts.append(f"{len(facts.gpus)}x {model} ({first.arch or 'unknown arch'})")
    else:
        parts.append(f"{facts.cpu_count or '?'} CPUs, no GPU")
    if facts.rocm_version:
        parts.append(f"ROCm {facts.rocm_version}")
    checked = f"{len(checks)} check{'s' if len(checks) != 1 else ''}"
    return f"{facts.hostname}: {', '.join(parts)}; preflight passed ({checked})"
