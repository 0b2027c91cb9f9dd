"""Engine fidelity at plan time: the engine version a stack runs, and every flag and
engine variable it renders checked against that version's manifest.

A seed or a blog post is a claim about some engine version; the manifest
(:mod:`amdfleet.engines.manifest`, generated from the engine's own code) is the fact for
the version the stack pins. A flag the version would reject is refused with the field
it came from (``engine.extra_args[i]``, the recipe, or amdfleet's own rendering), the
version and the closest flag it has; a variable in the engine's namespace that the
version does not read is a dead setting and refused the same way; a deprecated one is a
warning. The deploy-time check (``EngineCommandCheck``) then asks the engine in the real
image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from amdfleet.catalog.releases import COMMIT_RE
from amdfleet.engines.flags import canonical_flag, parse_flags
from amdfleet.engines.manifest import EngineManifest, FlagProblem, check_env, check_flags
from amdfleet.engines.manifest import manifest as find_manifest
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.admission import Load, admission_issues
from amdfleet.plan.checkpoint import Resolved
from amdfleet.plan.models import ImagePlan, ModelPlan, NodePlan


@dataclass(frozen=True)
class EngineVersion:
    """The release a stack runs and the manifest its command is checked against."""

    version: str
    manifest: EngineManifest | None


def engine_version(
    resolved: Resolved, image: ImagePlan
) -> tuple[EngineVersion | None, list[Finding], list[str]]:
    """The engine version the stack runs, the issues with ``engine.version``, and
    warnings where amdfleet cannot know the version for sure."""
    spec = resolved.spec
    name = spec.engine.name
    known = resolved.versions
    asked = spec.engine.version
    warnings: list[str] = []
    if asked is not None and asked not in known:
        return (
            None,
            [
                config_issue(
                    "engine.version",
                    f"the catalog pins no {name} {asked}: amdfleet knows what "
                    f"{', '.join(f'{name} {v}' for v in known)} accept, not this version",
                    f"use {' or '.join(known)}, or add the release to "
                    "amdfleet/catalog/releases.py with its manifest (scripts/manifest-*.py)",
                )
            ],
            [],
        )
    if image.build and image.vllm_ref and not COMMIT_RE.match(image.vllm_ref):
        version = image.vllm_ref.removeprefix("v")
    else:
        release = resolved.release
        version = asked or (release.version if release else known[-1] if known else "unknown")
        if image.build:
            warnings.append(
                f"image_build.vllm_ref is a commit ({image.vllm_commit}): its command is "
                f"checked against vllm {version}'s manifest; the deploy-time check asks the "
                "built image itself"
            )
        elif spec.engine.image and asked is None:
            warnings.append(
                f"engine.image {spec.engine.image!r} is not the catalog's: amdfleet checks its "
                f"command against {name} {version} (set engine.version to the version it runs); "
                "the deploy-time check asks the image itself"
            )
    found = find_manifest(name, version)
    if found is None:
        warnings.append(
            f"no manifest for {name} {version}: its flags are checked only at deploy time, "
            "by the engine in the image"
        )
    return EngineVersion(version, found), [], warnings


def command_findings(
    resolved: Resolved,
    model: ModelPlan,
    nodes: Iterable[NodePlan],
    found: EngineManifest,
    load: Load | None,
) -> tuple[list[Finding], list[str]]:
    """Every flag and engine variable the nodes render, checked against ``found``, and the
    engine's admission limits against ``load`` (the verification's peak, None without a
    benchmark): the refusals (with the field each came from) and the warnings
    (deprecations)."""
    spec, engine = resolved.spec, resolved.engine
    lead = len(engine.command) + len(engine.positional(model.checkpoint))
    origins = _Origins.of(resolved)
    issues: dict[tuple[str, str], Finding] = {}
    warnings: dict[str, str] = {}
    for node in nodes:
        flags = parse_flags(node.argv[lead:])
        for problem in check_flags(found, flags):
            _record(problem, origins.flag(problem.flag), found, issues, warnings)
        if load is not None:
            for issue in admission_issues(
                spec.engine.name, found, flags, load, spec.engine.extra_args
            ):
                issues.setdefault((issue.subject, issue.detail), issue)
        names = sorted({*node.env, *node.secret_env})
        for problem in check_env(found, names):
            _record(problem, origins.env(problem.flag), found, issues, warnings)
    return list(issues.values()), list(warnings.values())


@dataclass(frozen=True)
class _Origins:
    """Which stack field each flag and variable comes from."""

    extra_args: dict[str, int]
    recipe_flags: dict[str, str]
    extra_env: frozenset[str]
    recipe_env: dict[str, str]

    @classmethod
    def of(cls, resolved: Resolved) -> _Origins:
        spec = resolved.spec
        extra: dict[str, int] = {}
        for index, token in enumerate(spec.engine.extra_args):
            if token.startswith("-"):
                extra.setdefault(canonical_flag(token.partition("=")[0]), index)
            else:  # a value, or a bare word a check reports as a flag: its own index
                extra.setdefault(token, index)
        recipe_flags: dict[str, str] = {}
        recipe_env: dict[str, str] = {}
        for recipe in resolved.recipes:
            for flag, _ in recipe.args:
                recipe_flags[canonical_flag(flag)] = recipe.source
            for name in recipe.env:
                recipe_env[name] = recipe.source
        return cls(extra, recipe_flags, frozenset(spec.engine.extra_env), recipe_env)

    def flag(self, flag: str) -> tuple[str, str]:
        key = canonical_flag(flag)
        if key in self.extra_args:
            return f"engine.extra_args[{self.extra_args[key]}]", ""
        if key in self.recipe_flags:
            return "engine.recipe", f" (the catalog recipe {self.recipe_flags[key]})"
        return "engine.name", " (amdfleet's own rendering: a defect of amdfleet, please report)"

    def env(self, name: str) -> tuple[str, str]:
        if name in self.extra_env:
            return f"engine.extra_env.{name}", ""
        if name in self.recipe_env:
            return "engine.recipe", f" (the catalog recipe {self.recipe_env[name]})"
        return "engine.name", " (amdfleet's own rendering: a defect of amdfleet, please report)"


def _record(
    problem: FlagProblem,
    origin: tuple[str, str],
    found: EngineManifest,
    issues: dict[tuple[str, str], Finding],
    warnings: dict[str, str],
) -> None:
    field, note = origin
    if problem.warning:
        warnings.setdefault(problem.flag, f"{field}: {problem.message}{note}")
        return
    hint = problem.hint
    if field == "engine.recipe":
        hint += "; or set engine.recipe: false and give your own engine.extra_args"
    issues.setdefault(
        (field, problem.flag),
        config_issue(field, f"{problem.message}{note}", hint),
    )
