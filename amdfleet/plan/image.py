"""Which container image the engine runs in: the stack's, the catalog's, or a build."""

from __future__ import annotations

from amdfleet import catalog, engines
from amdfleet.catalog.gpus import Accelerator
from amdfleet.config import StackSpec
from amdfleet.errors import ConfigIssue
from amdfleet.plan.models import ImagePlan

DEFAULT_BUILD_REPOSITORY = "amdfleet/vllm-aiter"


def image_plan(spec: StackSpec, acc: Accelerator) -> tuple[ImagePlan, list[ConfigIssue]]:
    """The image plan, and the issues with the stack's image settings."""
    build = spec.image_build
    if spec.engine.runtime == "process":
        if not build.enabled:
            return ImagePlan(image=None, build=False), []
        return ImagePlan(image=None, build=False), [
            ConfigIssue(
                "image_build.enabled",
                "an image build needs engine.runtime: docker",
                "set engine.runtime: docker or disable the build",
            )
        ]
    if build.enabled:
        return _build_plan(spec, acc)
    image = spec.engine.image or catalog.default_image(
        spec.engine.name, acc.arch, spec.engine.version
    )
    if image is None:
        return ImagePlan(image=None, build=False), [
            ConfigIssue(
                "engine.image",
                f"the catalog has no {spec.engine.name} image for {acc.arch}",
                "set engine.image, or use engine.runtime: process",
            )
        ]
    source = "engine.image" if spec.engine.image else "catalog"
    return ImagePlan(image=image, build=False, source=source), []


def _build_plan(spec: StackSpec, acc: Accelerator) -> tuple[ImagePlan, list[ConfigIssue]]:
    build = spec.image_build
    issues = []
    if not engines.engine(spec.engine.name).builds_image or acc.arch not in catalog.GPU_ARCHS:
        issues.append(
            ConfigIssue(
                "image_build.enabled",
                f"the AITER + vLLM build is for vllm on gfx942/gfx950, not "
                f"{spec.engine.name} on {acc.arch}",
                "disable image_build",
            )
        )
    targets = build.gfx_targets or (acc.arch,)
    bad = [t for t in targets if t not in catalog.GPU_ARCHS]
    if bad:
        issues.append(
            ConfigIssue(
                "image_build.gfx_targets",
                f"unknown gfx target(s): {', '.join(bad)}",
                f"use {' or '.join(catalog.GPU_ARCHS)}",
            )
        )
    if acc.arch not in targets:
        issues.append(
            ConfigIssue(
                "image_build.gfx_targets",
                f"the build targets {', '.join(targets)} but the GPUs are {acc.arch}",
                f"include {acc.arch}",
            )
        )
    tag = build.tag or f"aiter-{_slug(build.aiter_ref)}-vllm-{_slug(build.vllm_ref)}-" + "-".join(
        targets
    )
    repo = build.registry or DEFAULT_BUILD_REPOSITORY
    plan = ImagePlan(
        image=f"{repo}:{tag}",
        build=True,
        base_image=build.base_image,
        aiter_ref=build.aiter_ref,
        vllm_ref=build.vllm_ref,
        gfx_targets=tuple(targets),
        registry=build.registry,
        source="image_build",
    )
    return plan, issues


def _slug(ref: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in ref).strip("-")[:24]
