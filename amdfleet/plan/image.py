"""Which container image the engine runs in: the stack's, the catalog's, or a build.

A pre-built image named by a tag is pinned: ``up`` resolves the tag to a digest once and
every node runs that digest. A build is tagged with its content hash (the rendered
Dockerfile and the build arguments); with a registry it runs once on the build host and
every node pulls the pushed digest, without one every node builds it itself.
"""

from __future__ import annotations

import hashlib
import json

from amdfleet import catalog
from amdfleet.catalog.engines import SOURCE_BUILD_HOURS_PER_TARGET
from amdfleet.catalog.releases import AITER_SOURCE, BUILD_BASE_IMAGE, VLLM_SOURCE, SourcePin
from amdfleet.config import HostSpec, StackSpec
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.checkpoint import Resolved
from amdfleet.plan.models import ImagePlan
from amdfleet.remote.registry import is_pinned
from amdfleet.remote.transport.target import HostTarget
from amdfleet.templates import dockerfile_template

DEFAULT_BUILD_REPOSITORY = "amdfleet/vllm-aiter"
TAG_PREFIX = "c-"
TAG_HASH_CHARS = 16


def image_plan(resolved: Resolved) -> tuple[ImagePlan, list[Finding]]:
    """The image plan, and the issues with the stack's image settings."""
    spec, acc = resolved.spec, resolved.accelerator
    build = spec.image_build
    if spec.engine.runtime == "process":
        if not build.enabled:
            return ImagePlan(image=None, build=False), []
        return ImagePlan(image=None, build=False), [
            config_issue(
                "image_build.enabled",
                "an image build needs engine.runtime: docker",
                "set engine.runtime: docker or disable the build",
            )
        ]
    if build.enabled:
        return _build_plan(resolved)
    pinned = resolved.release
    image = spec.engine.image or (pinned.image if pinned else None)
    if image is None and spec.engine.version not in (None, *resolved.versions):
        return ImagePlan(image=None, build=False), []  # engine.version is refused for it
    if image is None:
        return ImagePlan(image=None, build=False), [
            config_issue(
                "engine.image",
                f"the catalog has no {spec.engine.name} image for {acc.arch}",
                "set engine.image, or use engine.runtime: process",
            )
        ]
    source = "engine.image" if spec.engine.image else "catalog"
    if "@" in image and not is_pinned(image):
        return ImagePlan(image=None, build=False), [
            config_issue(
                "engine.image",
                f"{image!r} names a digest that is not sha256:<64 hex digits>",
                "give a tag (repository:tag, pinned to its digest at `pulumi up`) or a full "
                "digest (repository@sha256:...)",
            )
        ]
    return ImagePlan(image=image, build=False, source=source, pin=not is_pinned(image)), []


def build_inputs_hash(template: str, build_args: dict[str, object]) -> str:
    """SHA-256 over the Dockerfile's template and the build arguments, which together make
    the rendered Dockerfile: equal exactly when the build would produce the same engine,
    whatever stack asks for it."""
    body = json.dumps({"dockerfile_template": template, "args": build_args}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def content_tag(digest: str) -> str:
    """The image tag for a content hash."""
    return TAG_PREFIX + digest[:TAG_HASH_CHARS]


def build_hours(targets: tuple[str, ...]) -> float:
    """The catalog's estimate of one build's duration."""
    return SOURCE_BUILD_HOURS_PER_TARGET * max(len(targets), 1)


def _build_plan(resolved: Resolved) -> tuple[ImagePlan, list[Finding]]:
    spec, acc = resolved.spec, resolved.accelerator
    build = spec.image_build
    issues = []
    if not resolved.engine.builds_image or acc.arch not in catalog.GPU_ARCHS:
        issues.append(
            config_issue(
                "image_build.enabled",
                f"the AITER + vLLM build is for vllm on gfx942/gfx950, not "
                f"{spec.engine.name} on {acc.arch}",
                "disable image_build",
            )
        )
    # A set of targets: two stacks listing the same ones in another order (or one twice)
    # build the same engine, so they share the content hash and the one build.
    targets = tuple(sorted(set(build.gfx_targets))) or (acc.arch,)
    bad = [t for t in targets if t not in catalog.GPU_ARCHS]
    if bad:
        issues.append(
            config_issue(
                "image_build.gfx_targets",
                f"unknown gfx target(s): {', '.join(bad)}",
                f"use {' or '.join(catalog.GPU_ARCHS)}",
            )
        )
    hours = build_hours(targets)
    if acc.arch not in targets:
        issues.append(
            config_issue(
                "image_build.gfx_targets",
                f"the build targets {', '.join(targets)} but the GPUs are {acc.arch}: the "
                f"image would not run on them, after a build of about {hours:g} h",
                f"include {acc.arch}",
            )
        )
    build_host, target, host_issues = _build_host(spec)
    issues += host_issues
    base_image = build.base_image or BUILD_BASE_IMAGE
    moving = catalog.moving_tag(base_image)
    if moving is not None:
        issues.append(
            config_issue(
                "image_build.base_image",
                f"{base_image!r} is a moving tag ({moving}): the build would change under "
                "the same content tag",
                f"use a versioned tag or a digest (repository@sha256:...), e.g. {BUILD_BASE_IMAGE}",
            )
        )
    vllm, found = _source_pin("image_build.vllm_ref", build.vllm_ref, VLLM_SOURCE, "vLLM")
    issues += found
    aiter, found = _source_pin("image_build.aiter_ref", build.aiter_ref, AITER_SOURCE, "AITER")
    issues += found
    if vllm is None or aiter is None:
        return ImagePlan(image=None, build=True), issues
    # Commits, not ref names: two builds of different code never share a tag, and two
    # names of one commit share the build. A release tag whose commit the catalog has not
    # recorded yet is hashed as the tag (a release tag is not moved; a branch is refused).
    args: dict[str, object] = {
        "base_image": base_image,
        "aiter_commit": aiter.commit or f"tag:{aiter.tag}",
        "vllm_commit": vllm.commit or f"tag:{vllm.tag}",
        "gfx_targets": list(targets),
    }
    digest = build_inputs_hash(dockerfile_template(), args)
    registry = build.registry
    repository = registry.repository if registry else DEFAULT_BUILD_REPOSITORY
    name = f"{registry.address}/{repository}" if registry else repository
    plan = ImagePlan(
        image=f"{name}:{content_tag(digest)}",
        build=True,
        base_image=base_image,
        aiter_ref=aiter.tag,
        aiter_commit=aiter.checkout,
        vllm_ref=vllm.tag,
        vllm_commit=vllm.checkout,
        gfx_targets=tuple(targets),
        registry=registry.address if registry else None,
        repository=repository,
        registry_username=registry.username if registry else None,
        registry_password_secret=registry.password_secret if registry else None,
        content_hash=digest,
        build_host=build_host,
        build_target=target,
        build_timeout_s=build.timeout_s,
        build_work_dir=build.work_dir,
        build_hours=hours,
        source="image_build",
    )
    return plan, issues


def _source_pin(
    field: str, ref: str | None, pins: tuple[SourcePin, ...], what: str
) -> tuple[SourcePin | None, list[Finding]]:
    """The commit a build ref names: the catalog's pin when unset, a tag the catalog
    pins, or a full commit. A branch (``main``, ``dev/perf``) is refused: it names
    whatever was pushed last, so the build could not say which code it holds."""
    if ref is None:
        return pins[0], []
    pin = catalog.source_pin(pins, ref)
    if pin is not None:
        return pin, []
    tags = ", ".join(
        f"{p.tag} ({p.commit[:12] if p.commit else 'commit not recorded'})" for p in pins
    )
    return None, [
        config_issue(
            field,
            f"{ref!r} is not a {what} release the catalog pins nor a full commit: a branch or "
            "an unpinned tag names whatever was pushed last",
            f"use {tags}, or the 40-hex commit you want (git ls-remote {pins[0].repo} {ref})"
            if pins
            else "use the 40-hex commit you want",
        )
    ]


def _build_host(spec: StackSpec) -> tuple[str | None, HostTarget | None, list[Finding]]:
    """The build host's name and target (registry builds only)."""
    build = spec.image_build
    chosen = build.build_host
    if build.registry is None:
        if chosen is None:
            return None, None, []
        return (
            None,
            None,
            [
                config_issue(
                    "image_build.build_host",
                    "a build host needs a registry: without one every node builds its own image",
                    "set image_build.registry, or remove image_build.build_host",
                )
            ],
        )
    hosts = spec.fleet.hosts
    if isinstance(chosen, HostSpec):
        if any(h.name == chosen.name for h in hosts):
            return (
                None,
                None,
                [
                    config_issue(
                        "image_build.build_host.name",
                        f"{chosen.name!r} is already a fleet host's name",
                        f"name the fleet host by its name alone (build_host: {chosen.name}), "
                        "or give the separate build host another name",
                    )
                ],
            )
        return chosen.name, HostTarget.from_spec(chosen), []
    if chosen is None:
        if not hosts:  # a cloud fleet: its head, once it exists
            return "head", None, []
        return hosts[0].name, HostTarget.from_spec(hosts[0]), []
    for host in hosts:
        if host.name == chosen:
            return host.name, HostTarget.from_spec(host), []
    valid = ", ".join(h.name for h in hosts)
    hint = (
        f"use one of {valid}, or a separate SSH host (a mapping with name and address)"
        if hosts
        else "a cloud fleet's nodes have no names yet: leave build_host unset (the head) or "
        "give a separate SSH host (a mapping with name and address)"
    )
    return (
        None,
        None,
        [config_issue("image_build.build_host", f"{chosen!r} is not a host of the fleet", hint)],
    )
