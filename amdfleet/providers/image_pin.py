"""ImagePin: a pre-built engine image's tag resolved to a digest once, and kept.

The seeds run moving tags (``rocm/vllm-dev:nightly``, ``vllm/vllm-openai-rocm:latest``).
``create`` pulls the tag on the head node and records the digest docker got for it;
every node then pulls and runs ``<repository>@<digest>``. Nothing re-resolves it: ``read``
(so ``pulumi refresh``) returns what state holds, and ``diff`` replaces the pin only when
the stack names another image. To move a stack to the tag's newest push on purpose, run
``pulumi up --replace <the pin's URN>``. An image already given by digest is pinned as it
is, without a call.

``delete`` removes the tag from the head if this resource pulled it there.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field

from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.docker_steps import inspect_image, registry_ref
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.images import pull_command, remove_command
from amdfleet.remote.registry import is_pinned
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget


class ImagePinProps(ProviderProps):
    """Which image to pin, resolved on which host (inputs), and the pin (outputs)."""

    host: HostTarget = Field(description="The host that resolves the tag (the head).")
    image: str = Field(description="The image as the stack names it (a tag or a digest).")
    timeout_s: int = Field(gt=0, description="Time limit of the pull, in seconds.")
    ref: str | None = Field(None, description="Output: <repository>@<digest>, what nodes run.")
    digest: str | None = Field(None, description="Output: the pinned manifest digest.")
    resolved_at: str | None = Field(None, description="Output: when the tag was resolved.")
    pulled: bool | None = Field(
        None, description="Output: whether this resource pulled the tag onto the host."
    )


class ImagePinProvider(ResourceProvider):
    """Resolves one tag once. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Pull the tag on the host and pin the digest docker recorded for it."""
        p = ImagePinProps.from_inputs(props)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if is_pinned(p.image):
            outs = {"ref": p.image, "digest": p.image.partition("@")[2], "pulled": False}
            return CreateResult(id_=p.image, outs=p.to_outputs(**outs, resolved_at=now))
        with ResourceProgress.for_resource(props) as progress, open_host(p.host) as conn:
            had = inspect_image(conn, p.image) is not None
            progress.step(f"pulling {p.image} on {p.host.name} to pin its digest")
            conn.run(pull_command(p.image), timeout=p.timeout_s)
            ref = registry_ref(
                conn,
                p.image,
                f"docker pulled {p.image} but lists no registry digest for it",
                "name the image by digest in engine.image (repository@sha256:...)",
            )
            progress.note(f"pinned {p.image} to {ref}")
        outs = {"ref": ref, "digest": ref.partition("@")[2], "pulled": not had}
        return CreateResult(id_=ref, outs=p.to_outputs(**outs, resolved_at=now))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """The pin is what state holds: a read never re-resolves the tag."""
        return ReadResult(id_=id_, outs=ImagePinProps.from_inputs(props).to_outputs())

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Another image is a new pin. Another head (a replaced cloud instance) or timeout
        changes in place: the pin stays, so a new head never re-resolves the tag."""
        replaces = changed_keys(olds, news, ("image",))
        changes = bool(replaces or changed_keys(olds, news, ("host", "timeout_s")))
        return DiffResult(changes=changes, replaces=replaces)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Keep the pin (on a new head this resource pulled nothing)."""
        old, new = ImagePinProps.from_inputs(olds), ImagePinProps.from_inputs(news)
        kept = {k: getattr(old, k) for k in ("ref", "digest", "resolved_at", "pulled")}
        if old.host != new.host:
            kept["pulled"] = False
        return UpdateResult(outs=new.to_outputs(**kept))

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove the tag from the host if this resource pulled it. Idempotent."""
        p = ImagePinProps.from_inputs(props)
        if p.pulled:
            with open_host(p.host) as conn:
                conn.run(remove_command(p.image), timeout=300)
                # The pinned digest too, if nothing else holds it (a node's EngineImage
                # removed its own copy before this resource is deleted).
                conn.run(
                    f"docker image rm {shlex.quote(str(p.ref))} >/dev/null 2>&1; true",
                    timeout=300,
                )


class ImagePin(AmdFleetResource, name="ImagePin", provider=ImagePinProvider, props=ImagePinProps):
    """A tag pinned to a digest; ``ref`` is what every node pulls and runs."""

    ref: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: ImagePinProps | pulumi.Output[ImagePinProps],
        opts: pulumi.ResourceOptions | None = None,
    ):
        inputs = ImagePinProps.inputs_of(props)
        super().__init__(name, inputs, opts)
