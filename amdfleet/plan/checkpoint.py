"""What a stack names, looked up once: accelerator, model, checkpoint, engine, recipes.

:func:`resolve` is the planner's only lookup by name: every later step computes from
the :class:`Resolved` record it returns. Each function returns what it resolved (or
None) together with the issues that stop it, so the planner can report every problem
at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from amdfleet import catalog, engines
from amdfleet.catalog.clouds import CloudDefaults, CloudSize
from amdfleet.catalog.engines import Recipe
from amdfleet.catalog.gpus import Accelerator
from amdfleet.catalog.models import Checkpoint, ModelInfo
from amdfleet.catalog.releases import Release
from amdfleet.config import ModelArchitecture, StackSpec
from amdfleet.engines.base import Engine
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.models import AcceleratorPlan, ModelPlan

Issues = list[Finding]


@dataclass(frozen=True)
class Resolved:
    """A stack with everything it names looked up in the catalog and the engines."""

    spec: StackSpec
    accelerator: Accelerator
    model: ModelInfo
    """The catalog's model, or one described by the stack's own ``model.architecture``."""
    engine: Engine
    recipes: tuple[Recipe, ...]
    """The seed recipes that apply (none with ``engine.recipe: false``)."""
    release: Release | None
    """The catalog's release of the engine for the arch and ``engine.version``."""
    versions: tuple[str, ...]
    """Every version of the engine the catalog pins."""
    cloud: CloudDefaults | None
    """A cloud fleet's cloud (None for a fleet of hosts)."""
    cloud_size: CloudSize | None
    """A cloud fleet's size, when the catalog knows it."""


def resolve(spec: StackSpec) -> tuple[Resolved | None, Issues]:
    """Look up the stack's accelerator, model and engine once (None with the issues when
    the accelerator or the model is unknown; config has checked the engine's name)."""
    acc, acc_issues = resolve_accelerator(spec)
    info, info_issues = resolve_model_info(spec)
    if acc is None or info is None:
        return None, [*acc_issues, *info_issues]
    name, fleet = spec.engine.name, spec.fleet.cloud
    recipes = (
        catalog.recipes_for(name, acc.arch, spec.model.precision) if spec.engine.recipe else ()
    )
    resolved = Resolved(
        spec=spec,
        accelerator=acc,
        model=info,
        engine=engines.engine(name),
        recipes=tuple(recipes),
        release=catalog.release(name, acc.arch, spec.engine.version),
        versions=catalog.versions(name),
        cloud=catalog.cloud(fleet.provider) if fleet else None,
        cloud_size=catalog.cloud_size(fleet.provider, fleet.plan) if fleet else None,
    )
    return resolved, []


def resolve_accelerator(spec: StackSpec) -> tuple[Accelerator | None, Issues]:
    """The catalog accelerator named by ``topology.accelerator``."""
    acc = catalog.ACCELERATORS.get(spec.topology.accelerator.lower())
    if acc is not None:
        return acc, []
    return None, [
        config_issue(
            "topology.accelerator",
            f"unknown accelerator {spec.topology.accelerator!r}",
            f"use one of {', '.join(catalog.ACCELERATORS)}",
        )
    ]


def accelerator_plan(acc: Accelerator) -> AcceleratorPlan:
    """The plan's record of the accelerator."""
    return AcceleratorPlan(id=acc.id, name=acc.name, arch=acc.arch, memory_gib=acc.memory_gib)


def resolve_model_info(spec: StackSpec) -> tuple[ModelInfo | None, Issues]:
    """The catalog model, or one described by the stack's own ``model.architecture``."""
    info = catalog.find_model(spec.model.id)
    if info is not None:
        return info, []
    if spec.model.architecture is None:
        return None, [
            config_issue(
                "model.id",
                f"{spec.model.id!r} is not in the catalog",
                f"use one of {', '.join(catalog.MODELS)}, or add model.architecture "
                "(layers, heads, kv_heads, ...) and model.checkpoint for another model",
            )
        ]
    info = ModelInfo(
        id=spec.model.id,
        name=spec.model.id,
        base_repo=spec.model.checkpoint or spec.model.id,
        arch=spec.model.architecture,
    )
    return info, []


def resolve_model(resolved: Resolved) -> tuple[ModelPlan | None, Issues]:
    """The checkpoint to serve and its sizes, or the issues that rule it out."""
    spec, acc, info = resolved.spec, resolved.accelerator, resolved.model
    precision = spec.model.precision
    issues = _precision_issues(acc, precision)
    if issues:
        return None, issues
    ckpt, issues = _checkpoint(spec, acc, info)
    if ckpt is None:
        return None, issues
    stored = ckpt.precision
    online = stored == "bf16" and precision == "fp8"
    if stored != precision and not online:
        return None, [
            config_issue(
                "model.checkpoint",
                f"{ckpt.repo} is stored in {stored} but model.precision is {precision}",
                f"set model.precision: {stored}, or pick a {precision} checkpoint",
            )
        ]
    if ckpt.gated and not spec.weights.hf_token_secret and not spec.weights.local_path:
        issues.append(
            config_issue(
                "weights.hf_token_secret",
                f"{ckpt.repo} is gated on Hugging Face and the stack names no token secret",
                "accept the licence on huggingface.co, set weights.hf_token_secret: hfToken "
                "and run `pulumi config set --secret hfToken` (it prompts; or pipe the token on "
                "stdin, never on the command line); or stage the weights "
                "yourself and set weights.local_path",
            )
        )
    arch = spec.model.architecture or info.arch
    is_path = ckpt.repo.startswith("/")
    model = ModelPlan(
        id=info.id,
        name=info.name,
        checkpoint=ckpt.repo,
        is_local_path=is_path,
        revision=spec.model.revision,
        precision=precision,
        stored_precision=stored,
        online_quantization=online,
        served_name=spec.model.served_name or (spec.model.id if is_path else ckpt.repo),
        gated=ckpt.gated,
        architecture=arch,
        weight_bytes=weight_bytes(arch, precision),
        checkpoint_bytes=weight_bytes(arch, stored),
    )
    return model, issues


def substitution_warnings(resolved: Resolved, model: ModelPlan) -> list[str]:
    """Say so when model.id names a checkpoint the plan does not serve (one that cannot
    run here, or is stored at another precision) and no model.checkpoint chose one."""
    spec, acc = resolved.spec, resolved.accelerator
    if spec.model.checkpoint is not None:
        return []
    # A model the stack describes itself has no checkpoints: it names none.
    named = resolved.model.find_checkpoint(spec.model.id.rstrip("/"))
    if named is None or named.repo.lower() == model.checkpoint.lower():
        return []
    if not named.usable:
        why = f"it does not run on ROCm ({named.why_unusable})"
    elif named.precision != spec.model.precision:
        why = f"it is stored in {named.precision} and model.precision is {spec.model.precision}"
    else:
        why = f"it does not run on {acc.arch} ({acc.id})"
    return [
        f"model.id names {named.repo}, but {why}: serving {model.checkpoint} instead (the "
        f"catalog's {model.stored_precision} checkpoint); set model.checkpoint to choose "
        "the checkpoint yourself"
    ]


def weight_bytes(arch: ModelArchitecture, precision: str) -> int:
    """Bytes of the weights in ``precision``: the linear (attention and MLP) parameters
    at the precision's width, embeddings, LM head and norms at BF16."""
    linear, other = catalog.param_counts(arch)
    return int(linear * catalog.WEIGHT_BYTES[precision] + other * 2)


def _precision_issues(acc: Accelerator, precision: str) -> Issues:
    if precision == "mxfp4" and not acc.mxfp4:
        return [
            config_issue(
                "model.precision",
                f"mxfp4 needs gfx950 (MI350X/MI355X) matrix cores; {acc.id} is {acc.arch}",
                "use precision fp8 on this accelerator, or topology.accelerator mi355x",
            )
        ]
    if precision == "fp8" and not acc.fp8:
        return [
            config_issue(
                "model.precision", f"fp8 is not supported on {acc.id}", "use precision bf16"
            )
        ]
    return []


def _checkpoint(
    spec: StackSpec, acc: Accelerator, info: ModelInfo
) -> tuple[Checkpoint | None, Issues]:
    override = spec.model.checkpoint
    precision = spec.model.precision
    if override is None:
        ckpt = info.checkpoint_for(precision, acc.arch)
        if ckpt is not None:
            return ckpt, []
        return None, [
            config_issue(
                "model.precision",
                f"the catalog has no {precision} checkpoint of {info.id} for {acc.arch}",
                "set model.checkpoint to a repo or path, or choose another precision",
            )
        ]
    if override.startswith("/"):
        return Checkpoint(override, precision, (acc.arch,), gated=False), []
    known = info.find_checkpoint(override)
    if known is None:
        gated = override.startswith("meta-llama/")
        return Checkpoint(override, precision, (acc.arch,), gated=gated), []
    if not known.usable:
        return None, [
            config_issue(
                "model.checkpoint",
                f"{override} does not run on ROCm: {known.why_unusable}",
                f"use {known.use_instead} (or remove model.checkpoint to take the catalog's)",
            )
        ]
    if acc.arch not in known.archs:
        return None, [
            config_issue(
                "model.checkpoint",
                f"{override} does not run on {acc.arch} ({acc.id})",
                f"it runs on {', '.join(known.archs)}",
            )
        ]
    return known, []
