"""The campaign file: which stacks (variants) to compare, the sweeps to run on each, an
optional accuracy check and the teardown policy.

A campaign file is YAML validated like a stack file: every model is frozen and
``extra="forbid"``, so a typo'd key is an issue naming its path and the valid keys, and
every problem is reported at once in a :class:`~amdfleet.errors.ConfigError`. Each
variant is a stack from ``stacks/`` (or a path) with optional section overrides merged
into it; the merged stack is validated and planned at load time, so a bad override is
refused before anything is rented or started.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from amdfleet import config as stack_config
from amdfleet.config import AccuracySpec, BenchmarkScenario, StackSpec
from amdfleet.errors import ConfigError
from amdfleet.findings import Finding, config_issue
from amdfleet.pydantic_issues import validation_issues

_LABEL_RE = r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$"
_NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$"
_SEED_RE = r"^[0-9]{3}$"

Load = float
"""A swept value: a concurrency (whole number) or a request rate (``inf`` allowed)."""


class CampaignError(ConfigError):
    """A campaign file is invalid (or one of its variants is); nothing has started."""

    heading = "invalid campaign file"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class VariantSpec(_Model):
    """One stack of the comparison."""

    label: str = Field(
        pattern=_LABEL_RE,
        description="Short unique name (lowercase, digits, dashes, at most 16 characters): "
        "used in legends, tables, file names and the Pulumi stack name.",
    )
    stack: str = Field(
        min_length=1, description="A stack name from stacks/ or a path to a stack file."
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Stack config sections to deep-merge into the stack, e.g. "
        "{serving: {max_num_seqs: 8}}.",
    )

    @field_validator("overrides")
    @classmethod
    def _known_sections(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = [k for k in value if k not in stack_config.SECTIONS]
        if unknown:
            raise ValueError(
                f"unknown stack section(s): {', '.join(unknown)} — override one of "
                f"{', '.join(stack_config.SECTIONS)}"
            )
        return value


class SweepSpec(_Model):
    """One load sweep: the same workload at each value of concurrency or request rate."""

    name: str = Field(pattern=_NAME_RE, description="The sweep's name in reports.")
    kind: Literal["concurrency", "request_rate"] = Field(
        description="What is swept: the cap on in-flight requests, or the arrival rate "
        "(requests/s)."
    )
    values: tuple[float, ...] = Field(
        min_length=1,
        description="The loads, in order: whole numbers for concurrency; numbers or 'inf' "
        "(all at once) for request rates.",
    )
    input_len: int = Field(1024, ge=1, description="Prompt tokens (random dataset).")
    output_len: int = Field(128, ge=1, description="Generated tokens per request.")
    num_prompts: int | None = Field(
        None, ge=1, description="Requests per point (or set prompts_per_point)."
    )
    prompts_per_point: int | None = Field(
        None,
        ge=1,
        description="Requests per point as a multiple of its load (e.g. 5 × concurrency, "
        "or 30 × the rate as seed 001 does).",
    )
    max_concurrency: int | None = Field(
        None, ge=1, description="Cap on in-flight requests for a request-rate sweep."
    )
    dataset: Literal["random", "sharegpt", "prompts"] = Field(
        "random", description="As in a stack's benchmark scenario."
    )
    dataset_path: str | None = Field(None, description="ShareGPT or prompts file.")
    range_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Length spread.")
    endpoint: Literal["completions", "chat"] = Field("completions", description="API used.")
    ignore_eos: bool = Field(True, description="Generate exactly output_len tokens.")
    seed: int = Field(0, description="Seed for prompts and arrivals.")

    @field_validator("values", mode="before")
    @classmethod
    def _loads(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return tuple(math.inf if str(v).strip().lower() == "inf" else v for v in value)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if (self.num_prompts is None) == (self.prompts_per_point is None):
            raise ValueError(
                f"sweep '{self.name}' needs exactly one of num_prompts and prompts_per_point "
                "— set num_prompts for a fixed count, prompts_per_point for a multiple of load"
            )
        for v in self.values:
            if v <= 0 or (self.kind == "concurrency" and (math.isinf(v) or v != int(v))):
                what = "whole numbers >= 1" if self.kind == "concurrency" else "numbers > 0 or inf"
                raise ValueError(
                    f"sweep '{self.name}' has load {v!r} — {self.kind} values must be {what}"
                )
            if math.isinf(v) and self.prompts_per_point is not None:
                raise ValueError(
                    f"sweep '{self.name}' has rate inf with prompts_per_point — set "
                    "num_prompts (an infinite rate has no multiple)"
                )
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"sweep '{self.name}' repeats a load — list each value once")
        return self

    def scenario(self, load: Load) -> BenchmarkScenario:
        """The benchmark scenario of one point of this sweep."""
        count = self.num_prompts or math.ceil((self.prompts_per_point or 1) * load)
        concurrency = int(load) if self.kind == "concurrency" else self.max_concurrency
        rate = load if self.kind == "request_rate" and math.isfinite(load) else None
        return BenchmarkScenario(
            name=f"{self.name}-{load_label(load)}".replace(".", "p"),
            dataset=self.dataset,
            dataset_path=self.dataset_path,
            input_len=self.input_len,
            output_len=self.output_len,
            range_ratio=self.range_ratio,
            num_prompts=count,
            max_concurrency=concurrency,
            request_rate=rate,
            endpoint=self.endpoint,
            ignore_eos=self.ignore_eos,
            seed=self.seed,
        )


class CampaignSpec(_Model):
    """A whole campaign file."""

    name: str = Field(pattern=_NAME_RE, description="Campaign name; defaults to the file stem.")
    description: str = Field("", description="What the campaign compares.")
    variants: tuple[VariantSpec, ...] = Field(min_length=1, description="The stacks compared.")
    sweeps: tuple[SweepSpec, ...] = Field((), description="Load sweeps run on every variant.")
    accuracy: AccuracySpec | None = Field(None, description="Accuracy check on every variant.")
    teardown: Literal["always", "on-success", "keep"] = Field(
        "always",
        description="'always' destroys every stack it started; 'on-success' keeps a failed "
        "variant's stack for inspection; 'keep' destroys nothing.",
    )
    baseline: str | None = Field(None, description="Label ratios are taken to (default: first).")
    seeds: tuple[str, ...] = Field(
        (), description="Seed recipes (e.g. '001') whose published numbers are reference points."
    )
    parallel: bool = Field(
        False,
        description="Run variants on disjoint fleets at the same time; variants sharing a "
        "fleet always run one after another.",
    )

    @field_validator("seeds")
    @classmethod
    def _seed_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not re.fullmatch(_SEED_RE, s)]
        if bad:
            raise ValueError(f"seed id(s) {', '.join(bad)} — write three digits, e.g. '001'")
        return value

    @model_validator(mode="after")
    def _unique(self) -> CampaignSpec:
        labels = [v.label for v in self.variants]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"variant labels repeat: {', '.join(dupes)} — make each unique")
        names = [s.name for s in self.sweeps]
        dupes = sorted({x for x in names if names.count(x) > 1})
        if dupes:
            raise ValueError(f"sweep names repeat: {', '.join(dupes)} — make each unique")
        if self.baseline is not None and self.baseline not in labels:
            raise ValueError(
                f"baseline '{self.baseline}' is not a variant — use one of {', '.join(labels)}"
            )
        return self

    @property
    def baseline_label(self) -> str:
        """The variant ratios are taken to."""
        return self.baseline or self.variants[0].label


@dataclass(frozen=True)
class Variant:
    """A variant resolved: its merged stack spec and the raw config sections to set."""

    spec: VariantSpec
    stack: StackSpec
    sections: dict[str, Any]
    source: str

    @property
    def label(self) -> str:
        """The variant's label."""
        return self.spec.label

    @property
    def fleet_key(self) -> str:
        """What identifies the machines it runs on: its hosts' addresses, or the cloud
        provider, region and plan. Variants with equal keys never run at once."""
        cloud = self.stack.fleet.cloud
        if cloud is not None:
            return f"cloud:{cloud.provider}:{cloud.region}:{cloud.plan}"
        hosts = sorted(h.address or f"local:{h.name}" for h in self.stack.fleet.hosts)
        return "hosts:" + ",".join(hosts)


@dataclass(frozen=True)
class Campaign:
    """A loaded campaign: the file's spec and each variant resolved and planned."""

    spec: CampaignSpec
    path: Path
    variants: tuple[Variant, ...]

    @property
    def name(self) -> str:
        """The campaign's name."""
        return self.spec.name

    def points(self) -> list[tuple[SweepSpec, Load]]:
        """Every sweep point, in run order."""
        return [(sweep, load) for sweep in self.spec.sweeps for load in sweep.values]


def load_campaign(path: Path | str) -> Campaign:
    """Load, validate and plan a campaign file.

    Raises :class:`ConfigError` listing every problem (field paths like
    ``variants[1].overrides.serving.max_num_seqs``, with hints) when the file is missing,
    not YAML, has unknown or invalid keys, names an unknown stack, or a variant's merged
    stack does not validate or plan.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CampaignError([config_issue("file", f"no campaign file at {path}", _FILE_HINT)])
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        issue = config_issue("file", f"not valid YAML: {e}", "indent with spaces, never tabs")
        raise CampaignError([issue], source) from e
    if not isinstance(document, dict):
        raise CampaignError(
            [config_issue("file", "the file must be a mapping", _FILE_HINT)], source
        )
    data = {"name": path.stem, **document}
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as e:
        invalid = validation_issues(
            e, CampaignSpec, where="campaign", described_in="amdfleet/campaign/spec.py"
        )
        raise CampaignError(invalid, source) from e
    issues: list[Finding] = []
    variants = []
    for index, variant in enumerate(spec.variants):
        try:
            variants.append(resolve_variant(spec.name, variant))
        except ConfigError as e:
            prefix = f"variants[{index}]"
            issues += [_nested(prefix, variant, issue) for issue in e.issues]
    if issues:
        raise CampaignError(issues, source)
    return Campaign(spec=spec, path=path, variants=tuple(variants))


def resolve_variant(campaign: str, variant: VariantSpec) -> Variant:
    """Merge a variant's overrides into its stack file, validate and plan the result.

    Raises ConfigError (paths relative to the stack, e.g. ``serving.max_num_seqs``) for an
    unknown stack, an invalid merged stack, or one the planner refuses.
    """
    from amdfleet.plan import plan

    path = stack_config.stack_path(variant.stack)
    if not path.is_file():
        known = ", ".join(stack_config.stack_names()) or "none"
        raise CampaignError([config_issue("stack", f"no stack file at {path}", f"known: {known}")])
    loaded = stack_config.load_stack_file(str(path))
    document = yaml.safe_load(path.read_text())
    raw = {
        str(k).partition(":")[2]: v
        for k, v in (document.get("config") or {}).items()
        if not (isinstance(v, dict) and set(v) == {"secure"})
    }
    sections = deep_merge(raw, variant.overrides)
    for key in loaded.spec.secret_keys:
        sections.pop(key, None)
    name = stack_name(campaign, variant.label)
    stack = stack_config.parse_stack(name, sections, source=f"variant {variant.label}")
    plan(stack)
    return Variant(spec=variant, stack=stack, sections=sections, source=str(path))


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: mappings merge key by key, anything else
    (lists included) is replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def stack_name(campaign: str, label: str) -> str:
    """The Pulumi stack name of a variant: ``<campaign>-<label>``, folded to what a stack
    name allows (lowercase letters, digits, dashes; at most 63 characters), keeping the
    label whole."""

    def fold(text: str) -> str:
        return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")

    tail = fold(label)
    head = fold(campaign)[: 62 - len(tail)].rstrip("-")
    return f"{head}-{tail}" if head else tail


def load_label(load: Load) -> str:
    """A load as text: ``8``, ``2.5`` or ``inf``."""
    if math.isinf(load):
        return "inf"
    return str(int(load)) if load == int(load) else str(load)


_FILE_HINT = "see campaigns/*.yaml for examples"


def _nested(prefix: str, variant: VariantSpec, issue: Finding) -> Finding:
    section = issue.subject.split(".", 1)[0].split("[", 1)[0]
    if section in variant.overrides:
        return config_issue(f"{prefix}.overrides.{issue.subject}", issue.detail, issue.hint)
    where = "" if issue.subject == "stack" else f"{issue.subject}: "
    return config_issue(f"{prefix}.stack", f"{where}{issue.detail}", issue.hint)
