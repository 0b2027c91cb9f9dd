"""The ``image_build`` section: an optional image build, its build host and registry."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, model_validator

from amdfleet.config.base import CONFIG_KEY_RE, NAME_RE, SpecModel
from amdfleet.config.fleet import HostSpec


def _build_host_kind(value: Any) -> str:
    return SSH_HOST_TAG if isinstance(value, dict | HostSpec) else HOST_NAME_TAG


HOST_NAME_TAG = "<host name>"
SSH_HOST_TAG = "<ssh host>"
BuildHost = Annotated[
    Annotated[str, Tag(HOST_NAME_TAG), Field(pattern=NAME_RE)]
    | Annotated[HostSpec, Tag(SSH_HOST_TAG)],
    Discriminator(_build_host_kind),
]
"""A fleet host's name, or a separate SSH host. Validation errors name the field without
the variant (``image_build.build_host.address``): the tags are dropped from their paths."""
_REGISTRY_ADDRESS_RE = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
_REPOSITORY_RE = r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"


class RegistrySpec(SpecModel):
    """The registry a built engine image is pushed to, and every node pulls it from."""

    address: str = Field(
        pattern=_REGISTRY_ADDRESS_RE,
        description="Registry host and optional port, as docker names it "
        "('registry.example.com', '10.0.0.5:5000'). A plain-HTTP registry must be in each "
        "node's and the build host's dockerd `insecure-registries`.",
    )
    repository: str = Field(
        "amdfleet/vllm-aiter",
        pattern=_REPOSITORY_RE,
        description="Repository inside the registry; the tag is the build's content hash.",
    )
    username: str | None = Field(
        None, description="User to log in as; None pushes and pulls without logging in."
    )
    password_secret: str | None = Field(
        None,
        pattern=CONFIG_KEY_RE,
        description="Name of the secret config key holding the registry password or token "
        "(`pulumi config set --secret KEY`). It is given to `docker login` on stdin, in a "
        "throwaway docker config that is removed after each push or pull.",
    )

    @model_validator(mode="after")
    def _credentials_pair(self) -> RegistrySpec:
        if (self.username is None) != (self.password_secret is None):
            raise ValueError(
                "username and password_secret go together — set both to log in, or "
                "neither for a registry that needs no login"
            )
        return self


class ImageBuildSpec(SpecModel):
    """Build the engine image (AITER + vLLM from source): once on a build host and pushed
    when a registry is set, else on every node."""

    enabled: bool = Field(False, description="Build instead of pulling `engine.image`.")
    base_image: str | None = Field(
        None,
        description="Image the build starts FROM: a versioned tag or a digest, never a moving "
        "tag (latest, nightly), which would change the build under the same content tag. "
        "Default: the catalog's release image of the pinned vLLM.",
    )
    aiter_ref: str | None = Field(
        None,
        description="AITER to build: a release tag the catalog pins to its commit, or a full "
        "40-hex commit; never a branch. Default: the AITER commit the pinned vLLM release "
        "builds with.",
    )
    vllm_ref: str | None = Field(
        None,
        description="vLLM to build: a release tag the catalog pins to its commit (v0.32.0), "
        "or a full 40-hex commit; never a branch. Default: the catalog's vLLM release.",
    )
    gfx_targets: tuple[str, ...] = Field(
        (), description="PYTORCH_ROCM_ARCH targets; defaults to the accelerator's arch."
    )
    registry: RegistrySpec | None = Field(
        None,
        description="Where the image is pushed. With a registry the image is built once on "
        "`build_host`, tagged with the build's content hash, pushed, and every node pulls "
        "the same digest. Without one, every node builds the image itself (the plan warns "
        "that nodes may then differ).",
    )
    build_host: BuildHost | None = Field(
        None,
        description="Where the build runs when a registry is set: the name of one of the "
        "fleet's hosts, or a separate SSH host (a host entry like fleet.hosts'). Default: "
        "the head node.",
    )
    timeout_s: int = Field(
        6 * 3600,
        gt=0,
        description="Deadline of one build, in seconds; a build still running then is "
        "stopped and its context removed.",
    )
    work_dir: str = Field(
        "/var/tmp/amdfleet-image-build",
        pattern=r"^/",
        description="Absolute directory on the build host for build contexts (removed after "
        "each build) and build logs (`<tag>.log`, kept until the stack is destroyed).",
    )
