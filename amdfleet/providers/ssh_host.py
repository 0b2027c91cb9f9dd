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

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field

from amdfleet.errors import PreflightError, RemoteCommandError
from amdfleet.findings import Finding
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys, plain
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.facts import HostFacts
from amdfleet.remote.facts.probe import build_probe_script, parse_probe_output, probe_time_limit
from amdfleet.remote.preflight import check_host
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

INPUTS = ("host", "requirement")


class SshHostProps(ProviderProps):
    """SshHost's properties: the host and what preflight demands of it (inputs), and the
    facts and checks the provider collected (outputs)."""

    host: HostTarget = Field(description="How to reach the host.")
    requirement: HostRequirement = Field(description="What preflight demands of the host.")
    facts: dict[str, Any] | None = Field(
        None, description="Output: the collected HostFacts, as a dict."
    )
    checks: list[dict[str, Any]] | None = Field(
        None, description="Output: every preflight check (name, ok, detail, hint)."
    )
    hostname: str | None = Field(None, description="Output: the host's own hostname.")


class SshHostProvider(ResourceProvider):
    """Connects, collects facts and runs preflight. Stateless; creates nothing remotely."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Collect facts and run preflight.

        Raises PreflightError listing every failed check (with hints), RemoteError or
        HostKeyMismatchError when the host cannot be reached safely. Idempotent.
        """
        p = SshHostProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            outs = _inspect(p, progress, enforce=True)
        return CreateResult(id_=p.host.name, outs=outs)

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-collect the facts (drift shows in ``pulumi refresh``); never fails on
        preflight, only records the checks."""
        p = SshHostProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            return ReadResult(id_=id_, outs=_inspect(p, progress, enforce=False))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A changed address or user is another host (replace); a changed requirement
        re-runs preflight (update). Compares raw values (``news`` may hold unknowns)."""
        changes = changed_keys(olds, news, INPUTS)
        replaces = ["host"] if "host" in changes else []
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Re-run preflight against the new requirement."""
        p = SshHostProps.from_inputs(news)
        with ResourceProgress.for_resource(news) as progress:
            return UpdateResult(outs=_inspect(p, progress, enforce=True))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove: an SshHost never changes its host."""


def host_facts(facts: Mapping[str, Any]) -> HostFacts:
    """An SshHost's ``facts`` output (HostFacts as a dict, as Pulumi hands it back) as the
    typed record: the one place the program parses it."""
    return HostFacts.from_dict(plain(dict(facts)))


class SshHost(AmdFleetResource, name="SshHost", provider=SshHostProvider, props=SshHostProps):
    """A fleet host; outputs ``facts`` (HostFacts as a dict: :func:`host_facts` reads it)
    and ``checks``."""

    facts: pulumi.Output[dict[str, Any]]
    checks: pulumi.Output[list[dict[str, Any]]]
    hostname: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: SshHostProps | pulumi.Output[SshHostProps],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = SshHostProps.inputs_of(props)
        super().__init__(name, inputs, opts)


def _inspect(p: SshHostProps, progress: ResourceProgress, enforce: bool) -> dict[str, Any]:
    script = build_probe_script(p.requirement.weights_dir or "/")
    progress.step(f"connecting to {_where(p.host)}")
    with open_host(p.host) as conn:
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
    checks = check_host(conn.host, facts, p.requirement)
    failed = [c for c in checks if not c.ok]
    if enforce and failed:
        raise PreflightError(failed)
    if enforce:
        progress.note(_summary(facts, checks))
    return p.to_outputs(
        facts=facts.to_dict(), checks=[c.to_dict() for c in checks], hostname=facts.hostname
    )


def _where(host: HostTarget) -> str:
    if host.is_local:
        return "this machine"
    return f"{host.user}@{host.ssh_address}"


def _summary(facts: HostFacts, checks: list[Finding]) -> str:
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
