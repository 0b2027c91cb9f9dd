"""EngineImage: the engine's container image present on one node (docker runtime).

``create`` pulls the image, or builds it from the rendered AITER + vLLM Dockerfile, unless
it is already there, and records its id and repo digest. The image is normally a digest
reference (``<repository>@sha256:...``): the one :class:`~amdfleet.providers.image_build.
EngineImageBuild` pushed, or the one :class:`~amdfleet.providers.image_pin.ImagePin`
pinned, so every node holds the same bytes. A pull from a registry that needs a login
runs with the password on stdin in a throwaway docker config
(:func:`amdfleet.remote.registry.logged_in`). A node that builds the image itself (a
stack without a registry) first refuses a build whose gfx targets miss the node's GPUs.
``delete`` removes the image only if this resource pulled or built it (unless
``keep_on_delete``); an image the host already had is left alone.

Progress (:mod:`amdfleet.providers.progress`): while pulling or building, the resource's
status shows the time spent and the latest line docker printed (a layer event, a build
step); a finished create leaves a note saying what was staged and how long it took.
"""

from __future__ import annotations

import shlex
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field

from amdfleet.errors import RemoteError
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.docker_steps import CALL_TIMEOUT, DockerLog, inspect_image
from amdfleet.providers.image_build import gfx_refusal
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys, plain
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.images import (
    build_command,
    pull_command,
    remove_command,
)
from amdfleet.remote.registry import logged_in
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

IDENTITY = ("host", "image", "dockerfile_hash")


class EngineImageProps(ProviderProps):
    """EngineImage's properties: which image to stage on which host and how (inputs), and
    what was found or staged (outputs)."""

    SECRET_FIELDS = ("registry_password",)

    host: HostTarget = Field(description="The host the image is staged on.")
    image: str = Field(description="The image reference (a tag, or a name with a digest).")
    dockerfile: str | None = Field(
        None, description="The rendered Dockerfile to build from; None pulls the image."
    )
    dockerfile_hash: str | None = Field(
        None, description="SHA-256 of the Dockerfile (labels the built image)."
    )
    build_dir: str = Field(description="Scratch directory on the host for a build.")
    timeout_s: int = Field(gt=0, description="Time limit of the pull or build, in seconds.")
    keep_on_delete: bool = Field(False, description="Leave the image on the host on delete.")
    registry: str | None = Field(None, description="Registry to log in to before pulling.")
    registry_username: str | None = Field(None, description="Registry user (None: no login).")
    registry_password: str | None = Field(None, description="Secret: the registry password.")
    gfx_targets: tuple[str, ...] = Field((), description="A build's gfx targets.")
    host_archs: list[str] = Field(
        default_factory=list, description="The gfx archs the host's GPUs report (host facts)."
    )
    build_hours: float = Field(0.0, ge=0, description="Estimated duration of a build, in hours.")
    image_id: str | None = Field(None, description="Output: the image id on the host.")
    digest: str | None = Field(None, description="Output: the repo digest ('' if none).")
    dockerfile_sha256: str | None = Field(
        None, description="Output: the Dockerfile label of the image found ('' if none)."
    )
    created: bool | None = Field(
        None, description="Output: whether this resource pulled or built the image."
    )


class EngineImageProvider(ResourceProvider):
    """Stages one image on one host. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Pull or build the image if absent; return its id and digest.

        Raises RemoteCommandError with the last lines of the pull/build output.
        """
        p = EngineImageProps.from_inputs(props)
        if p.dockerfile:
            archs = {p.host.name: p.host_archs}
            refused = gfx_refusal(p.gfx_targets, archs, p.build_hours, p.timeout_s)
            if refused is not None:
                raise refused
        secrets = [p.registry_password] if p.registry_password else []
        with (
            ResourceProgress.for_resource(props) as progress,
            open_host(p.host, secrets=secrets) as conn,
        ):
            staged = _stage(conn, p, progress)
        return CreateResult(id_=f"{p.host.name}:{p.image}", outs=p.to_outputs(**staged))

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-inspect the image (a re-pulled moving tag shows a new digest)."""
        p = EngineImageProps.from_inputs(props)
        with open_host(p.host) as conn:
            found = inspect_image(conn, p.image)
        return ReadResult(id_=id_, outs=p.to_outputs(**(found or {"image_id": "", "digest": ""})))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Another host, image or Dockerfile is a replacement, and so is an image that
        ``read`` found gone; ``keep_on_delete`` changes in place. Compares raw values
        (``news`` may hold unknowns).

        A replacement under the same tag deletes the old resource first: one tag cannot
        hold both images, and deleting the old resource after the new one was staged would
        remove the new image (or the new resource would adopt the old build as present).
        """
        replaces = changed_keys(olds, news, IDENTITY)
        if not plain(olds).get("image_id"):
            replaces = replaces or ["image"]
        same_tag = not changed_keys(olds, news, ("image",))
        return DiffResult(
            changes=bool(replaces or changed_keys(olds, news, ("keep_on_delete",))),
            replaces=replaces,
            delete_before_replace=bool(replaces) and same_tag,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Nothing changes in place."""
        old, new = EngineImageProps.from_inputs(olds), EngineImageProps.from_inputs(news)
        kept: dict[str, Any] = {"keep_on_delete": new.keep_on_delete}
        if new.resource_urn:
            kept["resource_urn"] = new.resource_urn
        return UpdateResult(outs=old.model_copy(update=kept).to_outputs())

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove the image if this resource pulled or built it. Idempotent."""
        p = EngineImageProps.from_inputs(props)
        if p.created and not p.keep_on_delete:
            with ResourceProgress.for_resource(props) as progress, open_host(p.host) as conn:
                progress.step(f"removing {p.image}")
                conn.run(remove_command(p.image), timeout=300)


class EngineImage(
    AmdFleetResource, name="EngineImage", provider=EngineImageProvider, props=EngineImageProps
):
    """The engine image on one host; ``digest`` identifies exactly what ran."""

    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: EngineImageProps | pulumi.Output[EngineImageProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        image: pulumi.Input[str] | None = None,
        host_archs: pulumi.Input[list[str]] | None = None,
        registry_password: pulumi.Input[str] | None = None,
    ):
        deferred: dict[str, Any] = {}
        if image is not None:
            deferred["image"] = image
        if host_archs is not None:
            deferred["host_archs"] = host_archs
        if registry_password is not None:
            deferred["registry_password"] = pulumi.Output.secret(registry_password)
        inputs = EngineImageProps.inputs_of(props, **deferred)
        super().__init__(name, inputs, opts)


def _stage(conn: Connection, p: EngineImageProps, progress: ResourceProgress) -> dict[str, Any]:
    image = p.image
    progress.step(f"looking for {image} on the host")
    found = inspect_image(conn, image)
    wanted = p.dockerfile_hash if p.dockerfile else None
    if found and (wanted is None or found["dockerfile_sha256"] == wanted):
        progress.note(f"{image} already on the host ({_short(found)}), nothing to pull or build")
        return {**found, "created": False}
    verb = "building" if p.dockerfile else "pulling"
    log = DockerLog(f"{verb} {image}", progress)
    progress.step(f"{verb} {image}")
    if p.dockerfile:
        build_dir = shlex.quote(p.build_dir)
        conn.run(f"mkdir -p {build_dir}", timeout=CALL_TIMEOUT)
        try:
            conn.put(f"{p.build_dir}/Dockerfile", p.dockerfile.encode(), mode=0o644)
            command = build_command(image, f"{p.build_dir}/Dockerfile", str(wanted))
            conn.run(command, timeout=p.timeout_s, on_output=log.line)
        finally:
            conn.run(f"rm -rf -- {build_dir}", timeout=CALL_TIMEOUT, check=False)
    else:  # logged in to the registry when it names a user, else a plain pull
        command = logged_in(pull_command(image), p.registry or "", p.registry_username)
        stdin = p.registry_password or ""
        conn.run(command, timeout=p.timeout_s, on_output=log.line, stdin=stdin)
    found = inspect_image(conn, image)
    if not found:
        raise RemoteError(conn.host, f"{image} is still missing after staging it")
    done = "built" if p.dockerfile else "pulled"
    progress.note(f"{done} {image} in {log.took()} ({_short(found)})")
    return {**found, "created": True}


def _short(found: dict[str, str]) -> str:
    """The digest, else the image id, cut to what a person compares."""
    ident = found.get("digest") or found.get("image_id") or "no id"
    name, _, value = ident.rpartition(":")
    return f"{name}:{value[:12]}" if value and name else ident
