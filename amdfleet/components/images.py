"""Image staging: what gets the plan's engine image onto every node (docker runtime),
one digest on all of them."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from amdfleet.components.props import (
    TargetInput,
    bound,
    engine_image_props,
    image_build_props,
    image_pin_props,
)
from amdfleet.plan import DeploymentPlan
from amdfleet.providers.engine_image import EngineImage
from amdfleet.providers.image_build import EngineImageBuild, fleet_archs_of
from amdfleet.providers.image_pin import ImagePin
from amdfleet.remote.facts import HostFacts
from amdfleet.render import render_dockerfile


@dataclass(frozen=True)
class StagedImages:
    """The engine image on every node, and the digest reference they pull and run (None
    when the plan's image reference is what runs: a digest already, or a per-node
    build)."""

    images: list[EngineImage]
    ref: pulumi.Output[str] | None


def stage_images(
    name: str,
    plan: DeploymentPlan,
    targets: Sequence[TargetInput],
    facts: Sequence[pulumi.Input[HostFacts]],
    secrets: Mapping[str, pulumi.Output[str] | None],
    *,
    parent: pulumi.Resource | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> StagedImages:
    """Register what gets the plan's image onto every node (docker runtime), after
    ``depends_on`` (the fleet's preflight):

    - a build with a registry: one :class:`EngineImageBuild` on the build host, then
      every node pulls the pushed digest;
    - a pre-built image named by a tag: one :class:`ImagePin` on the head, then every node
      pulls the pinned digest;
    - a build without a registry, or an image given by digest: each node stages it.

    ``facts`` are the nodes' host facts (the build refuses gfx targets their GPUs lack);
    ``targets`` the nodes' hosts (Outputs on a cloud fleet: the props are bound to them).
    """
    image = plan.image
    if plan.engine.runtime != "docker" or image.image is None:
        return StagedImages([], None)

    def opts(depends: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, depends_on=list(depends))

    password = (
        secrets.get(image.registry_password_secret) if image.registry_password_secret else None
    )
    names = [node.name for node in plan.nodes]
    archs = pulumi.Output.all(**dict(zip(names, facts, strict=True))).apply(fleet_archs_of)
    source: pulumi.Resource | None = None
    ref: pulumi.Output[str] | None = None
    if image.build and image.registry:
        if image.build_host in names:
            target: TargetInput = targets[names.index(str(image.build_host))]
        else:  # a separate build host, or a cloud fleet's head
            target = image.build_target or targets[0]
        build = EngineImageBuild(
            f"{name}-image-build",
            bound(functools.partial(image_build_props, plan), target),
            # After preflight of every host: a fleet that fails preflight builds nothing.
            opts(depends_on),
            fleet_archs=archs,
            registry_password=password,
        )
        source, ref = build, build.ref
    elif image.pin:
        pin_props = bound(functools.partial(image_pin_props, plan), targets[0])
        pin = ImagePin(f"{name}-image-pin", pin_props, opts(depends_on[:1]))
        source, ref = pin, pin.ref
    on_node = image.build and not image.registry
    dockerfile = render_dockerfile(plan) if on_node else None
    images = [
        EngineImage(
            f"{name}-image-{node.name}",
            bound(
                functools.partial(engine_image_props, plan, node, dockerfile=dockerfile),
                targets[node.rank],
            ),
            opts([*depends_on, *([source] if source else [])]),
            image=ref,
            host_archs=archs.apply(functools.partial(_archs_of, node=node.name))
            if on_node
            else None,
            registry_password=password if image.registry else None,
        )
        for node in plan.nodes
    ]
    return StagedImages(images, ref)


def _archs_of(archs: Mapping[str, list[str]], node: str) -> list[str]:
    return list(archs.get(node, []))
