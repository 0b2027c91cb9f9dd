"""EngineImageBuild: the engine image built once, on one build host, and pushed.

The image is tagged with the build's content hash (the Dockerfile's template and the
build arguments, see :mod:`amdfleet.plan.image`), so ``create`` runs only for a build
that does not exist yet: an unchanged stack never diffs, and a changed ref is a new tag
and exactly one new build. ``create``:

1. refuses a build whose gfx targets miss an arch the fleet's GPUs report (host facts),
   before anything runs, naming the hours it would have wasted;
2. checks the registry login (a wrong password fails now, not after the build);
3. adopts the image if the build host already has it (same content label), or if the
   registry has it (another stack built it: pulled, not rebuilt);
4. otherwise builds it from a context holding only the Dockerfile, bounded by
   ``timeout_s``, every line going to a log file on the build host; a failed build raises
   with its last lines and the log's path; the context is removed either way;
5. pushes it and records the digest the registry stored: every node pulls
   ``<repository>@<digest>``.

``delete`` removes the build host's copy (if this resource made it) and the log. The
image stays in the registry: it is the cache that saves the next campaign the build.
The password is a secret input: never in outputs, commands or messages (it reaches
``docker login`` on stdin, see :mod:`amdfleet.remote.registry`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field

from amdfleet.errors import ImageBuildRefused, RemoteCommandError, RemoteError
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.docker_steps import CALL_TIMEOUT, DockerLog, inspect_image, registry_ref
from amdfleet.providers.progress import ResourceProgress, format_duration
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.facts import HostFacts
from amdfleet.remote.images import pull_command, remove_command
from amdfleet.remote.registry import (
    DEADLINE_EXIT,
    KILL_GRACE_S,
    build_command,
    build_exit,
    logged_in,
    push_command,
)
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

IDENTITY = ("host", "image", "content_hash", "registry")
_PUSH_TIMEOUT = 3 * 3600.0
_TAIL_LINES = 30


class EngineImageBuildProps(ProviderProps):
    """What to build where and push to which registry (inputs), and what was pushed
    (outputs)."""

    SECRET_FIELDS = ("registry_password",)

    host: HostTarget = Field(description="The build host.")
    image: str = Field(description="The image to build: <registry>/<repository>:c-<hash>.")
    dockerfile: str = Field(description="The rendered Dockerfile.")
    content_hash: str = Field(description="SHA-256 of the build (labels the image).")
    gfx_targets: tuple[str, ...] = Field(description="The gfx targets the build compiles for.")
    fleet_archs: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per fleet host, the gfx archs its GPUs report (host facts).",
    )
    build_hours: float = Field(ge=0, description="Estimated duration of the build, in hours.")
    timeout_s: int = Field(gt=0, description="Deadline of the build, in seconds.")
    work_dir: str = Field(description="Directory on the build host for contexts and logs.")
    registry: str = Field(description="Registry address the image is pushed to.")
    registry_username: str | None = Field(None, description="Registry user (None: no login).")
    registry_password: str | None = Field(None, description="Secret: the registry password.")
    keep_on_delete: bool = Field(False, description="Leave the build host's copy on delete.")
    ref: str | None = Field(None, description="Output: <repository>@<digest>, what nodes pull.")
    digest: str | None = Field(None, description="Output: the manifest digest pushed.")
    image_id: str | None = Field(None, description="Output: the image id on the build host.")
    built: bool | None = Field(None, description="Output: whether this resource ran a build.")
    created: bool | None = Field(
        None, description="Output: whether the build host's copy was made by this resource."
    )
    log_path: str | None = Field(None, description="Output: the build log on the build host.")
    build_s: float | None = Field(None, description="Output: the build's duration in seconds.")

    @property
    def context_dir(self) -> str:
        """The build context: a directory holding only the Dockerfile."""
        return f"{self.work_dir}/{self._tag}"

    @property
    def log_file(self) -> str:
        """Where the build's output goes on the build host."""
        return f"{self.work_dir}/{self._tag}.log"

    @property
    def _tag(self) -> str:
        return self.image.rsplit(":", 1)[-1]


def gfx_refusal(
    targets: Sequence[str], fleet_archs: Mapping[str, Sequence[str]], hours: float, timeout_s: int
) -> ImageBuildRefused | None:
    """The refusal of a build for ``targets`` on a fleet whose hosts report
    ``fleet_archs``, or None when every reported arch is a target (hosts without GPUs
    report none)."""
    missing = {
        host: sorted(set(archs) - set(targets))
        for host, archs in sorted(fleet_archs.items())
        if set(archs) - set(targets)
    }
    if not missing:
        return None
    arches = sorted({a for found in missing.values() for a in found})
    where = ", ".join(f"{host} has {'/'.join(found)}" for host, found in missing.items())
    deadline = format_duration(timeout_s)
    return ImageBuildRefused(
        f"refusing to build the engine image for {', '.join(targets)}: {where} GPUs, which "
        f"it would not run on — about {hours:g} h of build (deadline {deadline}) wasted",
        f"add {' and '.join(arches)} to image_build.gfx_targets, or run the stack on "
        f"{'/'.join(targets)} hosts",
        hours,
    )


class EngineImageBuildProvider(ResourceProvider):
    """Builds and pushes one image on one build host. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Build (unless present) and push the image; return its digest reference."""
        p = EngineImageBuildProps.from_inputs(props)
        refused = gfx_refusal(p.gfx_targets, p.fleet_archs, p.build_hours, p.timeout_s)
        if refused is not None:
            raise refused
        with ResourceProgress.for_resource(props) as progress, _open(p) as conn:
            outs = _build_and_push(conn, p, progress)
        return CreateResult(id_=f"{p.host.name}:{p.image}", outs=p.to_outputs(**outs))

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """The pushed image lives in the registry: its digest is what state records, and
        a read does not move it."""
        p = EngineImageBuildProps.from_inputs(props)
        return ReadResult(id_=id_, outs=p.to_outputs())

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Another build host, image, content or registry is a new build; the fleet's
        archs, the deadline, the credentials and ``keep_on_delete`` change in place (the
        archs are checked again)."""
        replaces = changed_keys(olds, news, IDENTITY)
        in_place = changed_keys(
            olds,
            news,
            ("fleet_archs", "timeout_s", "build_hours", "registry_username", "keep_on_delete"),
        )
        return DiffResult(changes=bool(replaces or in_place), replaces=replaces)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Nothing is rebuilt: the new fleet's archs must still be covered."""
        old, new = EngineImageBuildProps.from_inputs(olds), EngineImageBuildProps.from_inputs(news)
        refused = gfx_refusal(new.gfx_targets, new.fleet_archs, new.build_hours, new.timeout_s)
        if refused is not None:
            raise refused
        outputs = {k: getattr(old, k) for k in ("ref", "digest", "image_id", "built", "created")}
        outputs |= {"log_path": old.log_path, "build_s": old.build_s}
        return UpdateResult(outs=new.to_outputs(**outputs))

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove the build host's copy and the build log (if this resource made them).
        Idempotent."""
        p = EngineImageBuildProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress, _open(p) as conn:
            if p.created and not p.keep_on_delete:
                progress.step(f"removing {p.image} from the build host")
                conn.run(remove_command(p.image), timeout=300)
            if p.built:  # the log of this resource's build
                conn.run(f"rm -f -- {shlex.quote(p.log_file)}", timeout=CALL_TIMEOUT, check=False)


class EngineImageBuild(
    AmdFleetResource,
    name="EngineImageBuild",
    provider=EngineImageBuildProvider,
    props=EngineImageBuildProps,
):
    """The engine image, built once and pushed; ``ref`` is what every node pulls."""

    ref: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: EngineImageBuildProps | pulumi.Output[EngineImageBuildProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        fleet_archs: pulumi.Input[Mapping[str, Sequence[str]]] | None = None,
        registry_password: pulumi.Input[str] | None = None,
    ):
        deferred: dict[str, Any] = {}
        if fleet_archs is not None:
            deferred["fleet_archs"] = fleet_archs
        if registry_password is not None:
            deferred["registry_password"] = pulumi.Output.secret(registry_password)
        inputs = EngineImageBuildProps.inputs_of(props, **deferred)
        super().__init__(name, inputs, opts)


def _open(p: EngineImageBuildProps) -> Connection:
    """A connection that masks the password in everything read back from the host."""
    return open_host(p.host, secrets=[p.registry_password] if p.registry_password else [])


def _build_and_push(
    conn: Connection, p: EngineImageBuildProps, progress: ResourceProgress
) -> dict[str, Any]:
    if p.registry_username:
        progress.step(f"logging in to {p.registry} as {p.registry_username}")
        _registry(conn, p, "true", "log in to the registry", CALL_TIMEOUT)
    found = _labelled(conn, p)
    created, built, took = False, False, None
    if found is not None:
        progress.note(f"{p.image} is already on the build host: not rebuilt")
    else:
        progress.step(f"looking for {p.image} in {p.registry}")
        pulled = conn.run(
            logged_in(pull_command(p.image), p.registry, p.registry_username),
            timeout=_PUSH_TIMEOUT,
            check=False,
            stdin=p.registry_password or "",
        )
        found = _labelled(conn, p) if pulled.ok else None
        if found is not None:
            progress.note(f"{p.image} was already in {p.registry}: pulled, not rebuilt")
        else:
            took = _build(conn, p, progress)
            found = _labelled(conn, p)
            if found is None:
                raise RemoteError(conn.host, f"{p.image} is missing right after its build")
            built = True
        created = True
    progress.step(f"pushing {p.image}")
    _registry(conn, p, push_command(p.image), "push the image", _PUSH_TIMEOUT)
    ref = registry_ref(
        conn,
        p.image,
        f"{p.image} was pushed but docker lists no digest for it in {p.registry}",
        "check the registry accepts pushes (docker push by hand shows its answer)",
    )
    progress.note(f"pushed {ref}")
    return {
        "ref": ref,
        "digest": ref.partition("@")[2],
        "image_id": found["image_id"],
        "built": built,
        "created": created,
        "log_path": p.log_file if built else None,
        "build_s": took,
    }


def _build(conn: Connection, p: EngineImageBuildProps, progress: ResourceProgress) -> float:
    """Run the build in a fresh context; returns its duration. Raises with the last lines
    of the log when it fails or passes its deadline."""
    context = shlex.quote(p.context_dir)
    progress.step(f"building {p.image} on {p.host.name} (log: {p.log_file})")
    log = DockerLog(f"building {p.image}", progress)
    try:
        conn.run(f"rm -rf -- {context} && mkdir -p -- {context}", timeout=CALL_TIMEOUT)
        conn.put(f"{p.context_dir}/Dockerfile", p.dockerfile.encode(), mode=0o644)
        command = build_command(p.image, p.context_dir, p.content_hash, p.log_file, p.timeout_s)
        result = conn.run(
            command, timeout=p.timeout_s + KILL_GRACE_S + 60, check=False, on_output=log.line
        )
    finally:
        conn.run(f"rm -rf -- {context}", timeout=CALL_TIMEOUT, check=False)
    code = build_exit(result.output or result.stdout)
    if code != 0:
        late = code == DEADLINE_EXIT
        raise RemoteCommandError(
            conn.host,
            f"docker build -t {p.image} (log: {p.log_file})",
            None if late else code,
            result.tail(_TAIL_LINES),
            f"the build passed its deadline of {format_duration(p.timeout_s)} "
            "(image_build.timeout_s) and was stopped"
            if late
            else "fix the build (the full log is on the build host), then run `pulumi up` again",
        )
    progress.note(f"built {p.image} in {log.took()}")
    return log.elapsed


def _registry(
    conn: Connection, p: EngineImageBuildProps, command: str, what: str, timeout: float
) -> None:
    result = conn.run(
        logged_in(command, p.registry, p.registry_username),
        timeout=timeout,
        check=False,
        stdin=p.registry_password or "",
    )
    if not result.ok:
        raise RemoteCommandError(
            conn.host,
            f"{command} (registry {p.registry}, user {p.registry_username or 'none'})",
            result.exit_code,
            result.tail(_TAIL_LINES),
            f"could not {what}: check image_build.registry and its password secret, and "
            "that the build host's dockerd reaches the registry",
        )


def _labelled(conn: Connection, p: EngineImageBuildProps) -> dict[str, str] | None:
    """The build host's copy of the image, if it carries this build's content label."""
    found = inspect_image(conn, p.image)
    if found is None or found["dockerfile_sha256"] != p.content_hash:
        return None
    return found


def fleet_archs_of(facts: Mapping[str, HostFacts]) -> dict[str, list[str]]:
    """Per host name, the gfx archs its GPUs report, from its host facts."""
    return {name: sorted({g.arch for g in fact.gpus if g.arch}) for name, fact in facts.items()}
