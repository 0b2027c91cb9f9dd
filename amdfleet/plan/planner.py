"""``plan(spec)``: check a stack can work, then resolve it into a DeploymentPlan."""

from __future__ import annotations

from pathlib import Path

from amdfleet.config import STACKS_DIR, StackSpec
from amdfleet.errors import PlanError
from amdfleet.findings import Finding, config_issue
from amdfleet.plan import checks, fidelity, layout
from amdfleet.plan import fabric as fabric_check
from amdfleet.plan.admission import peak_load
from amdfleet.plan.checkpoint import (
    Resolved,
    accelerator_plan,
    resolve,
    resolve_model,
    substitution_warnings,
)
from amdfleet.plan.image import image_plan
from amdfleet.plan.layout import engine_python
from amdfleet.plan.memory import does_not_fit, memory_budget
from amdfleet.plan.models import (
    CloudPlan,
    DeploymentPlan,
    EnginePlan,
    LifetimePlan,
    ModelPlan,
    ServingPlan,
    VerificationPlan,
    WeightsPlan,
)
from amdfleet.plan.serving import serving_plan
from amdfleet.plan.verification import parity_input, verification_input

REPORTS_DIR = ".amdfleet/reports"
PROJECT_DIR: Path | None = (
    STACKS_DIR.parent if (STACKS_DIR.parent / "Pulumi.yaml").is_file() else None
)
"""Where Pulumi.yaml is: relative paths in a stack (a parity reference) are its. In a
checkout, its root; an installed amdfleet has none (None): the directory it runs in
stands for it, which is the project's when Pulumi runs the program."""


def plan(spec: StackSpec) -> DeploymentPlan:
    """Resolve ``spec`` into a :class:`DeploymentPlan`.

    Pure and deterministic. Raises :class:`PlanError` with every problem found (each
    with the field path and a hint) when the stack cannot be deployed as written. The
    accelerator, model and engine are looked up once (:func:`.checkpoint.resolve`);
    every step computes from that record.
    """
    where = f"stack {spec.name}"
    resolved, found = resolve(spec)
    if resolved is None:
        raise PlanError(found, where)
    acc = resolved.accelerator
    issues: list[Finding] = []
    model, found = resolve_model(resolved)
    issues += found
    issues += checks.check_fleet(resolved)
    issues += checks.check_ports(spec)
    found, warnings = checks.check_parallelism(spec, resolved.model.arch)
    issues += found
    issues += checks.check_engine(resolved)
    load = peak_load(spec.verification)  # what the verification sends at once
    serving, found = serving_plan(resolved, load)
    issues += found
    verification, found = verification_plan(spec, serving)
    issues += found
    image, found = image_plan(resolved)
    issues += found
    version, found, version_warnings = fidelity.engine_version(resolved, image)
    issues += found
    issues += fabric_check.fabric_issues(spec, acc)
    if issues or model is None:
        raise PlanError(issues, where)
    parallelism = layout.parallelism_plan(resolved)
    memory = memory_budget(acc, model, serving, parallelism)
    if not memory.fits:
        raise PlanError([does_not_fit(acc, model, serving, parallelism, memory)], where)
    found, scenario_warnings = checks.check_verification(spec, serving)
    benchmark_issues, benchmark_warnings = checks.check_benchmark(spec)
    found += benchmark_issues
    if found:
        raise PlanError(found, where)
    warnings += scenario_warnings + benchmark_warnings
    warnings += substitution_warnings(resolved, model)
    warnings += checks.layout_warnings(resolved, image)
    nodes = layout.nodes(resolved, model, serving, parallelism)
    warnings += version_warnings
    if version is not None and version.manifest is not None:
        found, command_warnings = fidelity.command_findings(
            resolved, model, nodes, version.manifest, load
        )
        if found:
            raise PlanError(found, where)
        warnings += command_warnings
    python = engine_python(resolved)
    return DeploymentPlan(
        stack=spec.name,
        description=spec.description,
        accelerator=accelerator_plan(acc),
        model=model,
        engine=EnginePlan(
            name=spec.engine.name,
            version=version.version if version else "unknown",
            manifest=version.manifest.summary if version and version.manifest else None,
            runtime=spec.engine.runtime,
            network=spec.engine.network,
            ipc=spec.engine.ipc,
            shm_size=spec.engine.shm_size,
            container_name=f"amdfleet-{spec.name}",
            readiness=layout.readiness(resolved, model),
            python=python,
            adopt=spec.engine.adopt,
        ),
        parallelism=parallelism,
        serving=serving,
        memory=memory,
        nodes=nodes,
        image=image,
        weights=_weights(spec, model, python),
        verification=verification,
        campaign=LifetimePlan(**spec.campaign.model_dump()),
        recipe_sources=tuple(r.source for r in resolved.recipes),
        recipe_dropped=tuple(
            f"{item} ({why})" for r in resolved.recipes for item, why in r.dropped
        ),
        warnings=tuple(warnings),
        cluster=layout.cluster_plan(resolved, parallelism, nodes),
        fabric=fabric_check.fabric_plan(spec, acc, image.image, python),
        cloud=_cloud(resolved),
        address_slots=layout.address_slots(spec),
    )


def _cloud(resolved: Resolved) -> CloudPlan | None:
    """The cloud instances of a cloud fleet, with the catalog's defaults filled in and
    their cost; None for a fleet of hosts. ``plan`` has run :func:`checks.check_cloud`
    by then, so the size is in the catalog."""
    spec = resolved.spec
    fleet, defaults, size = spec.fleet.cloud, resolved.cloud, resolved.cloud_size
    if fleet is None or defaults is None:
        return None
    if size is None:
        raise PlanError(checks.check_cloud(resolved), f"stack {spec.name}")
    hourly = round(size.price_hourly_usd * fleet.count, 2)
    ttl = spec.campaign.ttl_hours
    return CloudPlan(
        provider=fleet.provider,
        title=defaults.title,
        api_url=fleet.api_url or defaults.api_url,
        region=fleet.region,
        size=size.slug,
        gpus=size.gpus,
        count=fleet.count,
        image=fleet.image or defaults.image,
        user=fleet.user or defaults.user,
        team=fleet.team,
        trust_first_use=fleet.trust_first_use,
        boot_timeout_s=fleet.boot_timeout_s or defaults.boot_timeout_s,
        token_secret=fleet.api_token_secret,
        ssh_key_path=fleet.ssh_key_path,
        price_hourly_usd=size.price_hourly_usd,
        fleet_hourly_usd=hourly,
        ttl_hours=ttl,
        campaign_usd=None if ttl is None else round(hourly * ttl, 2),
        max_hourly_usd=fleet.max_hourly_usd,
        max_total_usd=fleet.max_total_usd,
        size_source=size.source,
    )


def _weights(spec: StackSpec, model: ModelPlan, python: str) -> WeightsPlan:
    weights = spec.weights
    return WeightsPlan(
        repo=model.checkpoint,
        revision=model.revision,
        cache_dir=weights.cache_dir,
        local_path=weights.local_path,
        hub_endpoint=weights.hub_endpoint,
        timeout_s=weights.download_timeout_s,
        hf_token_secret=weights.hf_token_secret,
        python=python,
        keep_on_delete=spec.campaign.keep_weights,
        container_dir=weights.container_dir,
    )


def verification_plan(
    spec: StackSpec, serving: ServingPlan
) -> tuple[VerificationPlan, list[Finding]]:
    """The verification as it runs: a parity reference path made absolute (relative ones
    are the project directory's) and the dtype it compares in resolved (the parity
    block's own, else the dtype the engine serves)."""
    section = spec.verification
    issues: list[Finding] = []
    parity = None
    if section.parity is not None:
        dtype = section.parity.dtype or serving.dtype
        if dtype is None:
            issues.append(
                config_issue(
                    "verification.parity.dtype",
                    "not set, and the engine serves the checkpoint's own dtype (serving.dtype: "
                    "auto on a GPU), so which recorded dtype to compare with is unknown",
                    "set verification.parity.dtype to the dtype the reference was recorded "
                    "in, or serving.dtype",
                )
            )
        project = PROJECT_DIR or Path.cwd()
        reference = str(project / section.parity.reference)  # an absolute one stays
        parity = parity_input(section.parity, reference=reference, dtype=dtype)
    report_dir = f"{REPORTS_DIR}/{spec.name}"
    return VerificationPlan(
        input=verification_input(section, parity), report_dir=report_dir
    ), issues
