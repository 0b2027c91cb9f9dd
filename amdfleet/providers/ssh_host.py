"""SshHost: a host of the fleet, its collected facts, and its preflight.

Creating an SshHost changes nothing on the host: it connects with the pinned host key,
runs the read-only probe script, and fails with every failed preflight check of the host
(GPUs, devices, groups, shm, NUMA balancing, disk room, container runtime), each with a
hint. ``read`` re-collects the facts, so ``pulumi refresh`` shows drift.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from amdfleet.errors import PreflightError, RemoteCommandError
from amdfleet.providers.props import as_int, changed_keys, plain
from amdfleet.remote.hosts import open_host
from amdfleet.remote.preflight import HostRequirement, check_host
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
        outs = _inspect(props, enforce=True)
        return CreateResult(id_=str(plain(props["host"])["name"]), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-collect the facts (drift shows in ``pulumi refresh``); never fails on
        preflight, only records the checks."""
        return ReadResult(id_=id_, outs=_inspect(props, enforce=False))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A changed address or user is another host (replace); a changed requirement
        re-runs preflight (update)."""
        changes = changed_keys(olds, news, INPUTS)
        replaces = ["host"] if "host" in changes else []
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Re-run preflight against the new requirement."""
        return UpdateResult(outs=_inspect(news, enforce=True))

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
        }
        super().__init__(SshHostProvider(), name, props, opts)


def _inspect(props: dict[str, Any], enforce: bool) -> dict[str, Any]:
    host = plain(props["host"])
    requirement = _requirement(plain(props["requirement"]))
    script = build_probe_script(requirement.weights_dir or "/")
    with open_host(host) as conn:
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
    checks = check_host(facts, requirement)
    failed = [c for c in checks if not c.ok]
    if enforce and failed:
        raise PreflightError([(conn.host, f"{c.name}: {c.detail}", c.hint) for c in failed])
    return {
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
