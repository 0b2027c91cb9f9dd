"""EngineCommandCheck: the engine in the real image (or virtualenv) accepts the command.

The plan already checked every flag against the manifest of the pinned version; this is
the fact. Once the image is on the head and before any weights move or any engine
starts, ``create`` hands each distinct node command line to the engine's own parser there
(:mod:`amdfleet.remote.command_check`) and fails ``pulumi up`` in seconds with the
engine's own message when it refuses one. Nothing is left on the host. ``read`` returns
what state holds (the check observes nothing that drifts); a new command, image or
environment is checked again in place (``update``), and ``delete`` has nothing to remove.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field

from amdfleet.errors import EngineCommandRejected, RemoteCommandError
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.command_check import check_command
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

CHECK_TIMEOUT_S = 300


class ParseCheck(BaseModel):
    """One parse-only run of the engine's parser over some nodes' commands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: tuple[str, ...] = Field(description="The nodes whose commands it parses.")
    argv: tuple[str, ...] = Field(description="The check (Engine.check_commands).")


class EngineCommandCheckProps(ProviderProps):
    """Where and in what the commands are checked (inputs), and when (output)."""

    host: HostTarget = Field(description="The host the check runs on (the head).")
    engine: str = Field(description="The engine and version, for messages: 'vllm 0.32.0'.")
    runtime: str = Field(description="'docker' or 'process'.")
    image: str | None = Field(None, description="The image reference (docker runtime).")
    gpu: bool = Field(False, description="Give the container the GPUs' device nodes.")
    env: dict[str, str] = Field(description="The head's non-secret engine environment.")
    checks: tuple[ParseCheck, ...] = Field(
        description="The parse-only runs (empty: the engine has no such check)."
    )
    checked_at: str | None = Field(None, description="Output: when the engine accepted them.")
    accepted: str | None = Field(None, description="Output: the engine's last line.")


class EngineCommandCheckProvider(ResourceProvider):
    """Runs the engine's own parser over the rendered commands. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Run every parse-only check; raise :class:`EngineCommandRejected` with the
        engine's own output when one refuses (nothing was made, nothing to clean up)."""
        p = EngineCommandCheckProps.from_inputs(props)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if not p.checks:
            outs = p.to_outputs(checked_at=now, accepted=f"{p.engine} has no parse-only check")
            return CreateResult(id_=f"check-{p.host.name}", outs=outs)
        last = ""
        with ResourceProgress.for_resource(props) as progress, open_host(p.host) as conn:
            for check in p.checks:
                where = f" in {p.image}" if p.image else ""
                nodes = ", ".join(check.nodes)
                progress.step(f"asking {p.engine}{where} to parse the command of {nodes}")
                shell = check_command(p.runtime, check.argv, p.env, image=p.image, gpu=p.gpu)
                try:
                    result = conn.run(shell, timeout=CHECK_TIMEOUT_S)
                except RemoteCommandError as e:
                    shown = check_command(
                        p.runtime, _shown(check.argv), p.env, image=p.image, gpu=p.gpu
                    )
                    raise EngineCommandRejected(
                        p.host.name, p.engine, nodes, shown, e.exit_code, e.output_tail
                    ) from e
                last = result.tail(1)
            progress.note(f"{p.engine} accepts the command of every node")
        outs = p.to_outputs(checked_at=now, accepted=last)
        return CreateResult(id_=f"check-{p.host.name}", outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """What state holds: a passed check stays passed until its inputs change."""
        return ReadResult(id_=id_, outs=EngineCommandCheckProps.from_inputs(props).to_outputs())

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Another command, image, engine, host or environment is checked again (in
        place: the check holds nothing to replace)."""
        keys = ("host", "engine", "runtime", "image", "gpu", "env", "checks")
        return DiffResult(changes=bool(changed_keys(olds, news, keys)), replaces=[])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Check the new commands as ``create`` does (raises the same way)."""
        return UpdateResult(outs=self.create(news).outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing was left on the host. Idempotent."""


def _shown(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The check as an error shows it: an inline parse script (``-c <program>``) named,
    not printed."""
    words = list(argv)
    if len(words) > 2 and words[1] == "-c" and "\n" in words[2]:
        words[2] = "<the engine's parse script, amdfleet/engines>"
    return tuple(words)


class EngineCommandCheck(
    AmdFleetResource,
    name="EngineCommandCheck",
    provider=EngineCommandCheckProvider,
    props=EngineCommandCheckProps,
):
    """The head's engine accepted every node's rendered command."""

    checked_at: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: EngineCommandCheckProps | pulumi.Output[EngineCommandCheckProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        image: pulumi.Input[str] | None = None,
    ) -> None:
        inputs = EngineCommandCheckProps.inputs_of(props)
        if image is not None:
            inputs["image"] = image
        super().__init__(name, inputs, opts)
