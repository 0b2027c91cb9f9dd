"""A campaign's results: the typed records the runner writes as ``results.json`` and the
report reads back.

:func:`build_results` folds the campaign file and its journal state into a
:class:`CampaignResults`; ``to_json`` gives the file's content and ``from_json`` reads it
back, so a campaign directory written before these types existed renders the same.
A point keeps the benchmark's record as it came (``vllm bench serve`` key names) under
its sweep, sweep name and load; :meth:`PointResult.metric` reads a number out of it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amdfleet.campaign.journal import CampaignState, VariantState
from amdfleet.campaign.spec import Campaign, Variant, load_label
from amdfleet.errors import AmdFleetError

SCHEMA = 1


class ResultsError(AmdFleetError):
    """results.json cannot be read as a campaign's results."""


@dataclass(frozen=True)
class PointResult:
    """One sweep point of one variant: what the benchmark recorded at one load."""

    sweep: str
    """The sweep's kind: ``concurrency`` or ``request_rate``."""
    sweep_name: str | None
    load: float
    """Concurrency or request rate; ``inf`` for an unbounded rate."""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """The benchmark's record as journaled (``vllm bench serve`` key names)."""
    written_load: float | int | str | None = None
    """The load as the file wrote it (``"inf"``, ``4``, ``1.0``), so the report shows a
    file's loads as they were written; None: as :func:`json_load` writes ``load``."""

    @property
    def name(self) -> str:
        """The sweep's name (its kind when the file names none)."""
        return self.sweep_name or self.sweep

    @property
    def finite(self) -> bool:
        """The load is a number a plot can place (not an unbounded rate)."""
        return math.isfinite(self.load)

    @property
    def failed(self) -> int:
        """Requests that failed at this point."""
        return int(self.metrics.get("failed") or 0)

    @property
    def failure_reasons(self) -> dict[str, int]:
        """Failed requests by reason (``HTTP 500: 5``)."""
        return dict(self.metrics.get("failure_reasons") or {})

    @property
    def load_json(self) -> float | int | str:
        """The load as results.json holds it."""
        return json_load(self.load) if self.written_load is None else self.written_load

    def metric(self, key: str) -> float | None:
        """The metric ``key`` as a finite number, None when missing or not a number."""
        return finite_number(self.metrics.get(key))

    def to_json(self) -> dict[str, Any]:
        """The point as results.json holds it: sweep, sweep name and load, then the
        benchmark's record."""
        return {
            "sweep": self.sweep,
            "sweep_name": self.sweep_name,
            "load": self.load_json,
            **self.metrics,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PointResult:
        """A point read back from results.json."""
        metrics = {k: v for k, v in data.items() if k not in ("sweep", "sweep_name", "load")}
        load = data["load"]
        return cls(str(data["sweep"]), data.get("sweep_name"), parse_load(load), metrics, load)


@dataclass(frozen=True)
class AccuracyResult:
    """A variant's accuracy score (GSM8K: flexible-extract and strict-match, each with
    its standard error)."""

    task: str
    limit: int | None
    n: int | None
    flexible_extract: float | None
    flexible_extract_stderr: float | None
    strict_match: float | None
    strict_match_stderr: float | None

    @classmethod
    def from_scores(cls, task: str, limit: int | None, result: Any) -> AccuracyResult:
        """From :func:`amdfleet.verify.run.run_accuracy`'s result."""
        flexible, strict = result.flexible_extract, result.strict_match
        return cls(
            task,
            limit,
            len(result.samples),
            flexible.value,
            flexible.stderr,
            strict.value,
            strict.stderr,
        )

    def to_json(self) -> dict[str, Any]:
        """As the journal's ``accuracy_done`` and results.json hold it."""
        return {
            "task": self.task,
            "limit": self.limit,
            "n": self.n,
            "flexible_extract": self.flexible_extract,
            "flexible_extract_stderr": self.flexible_extract_stderr,
            "strict_match": self.strict_match,
            "strict_match_stderr": self.strict_match_stderr,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccuracyResult:
        """Read back; ``n`` falls back to ``limit`` and the task to ``gsm8k``."""
        return cls(
            task=str(data.get("task", "gsm8k")),
            limit=data.get("limit"),
            n=data.get("n", data.get("limit")),
            flexible_extract=data.get("flexible_extract"),
            flexible_extract_stderr=data.get("flexible_extract_stderr"),
            strict_match=data.get("strict_match"),
            strict_match_stderr=data.get("strict_match_stderr"),
        )


@dataclass(frozen=True)
class VariantResult:
    """One variant: what ran (stack, engine, image, hosts), how it ended, its points and
    its accuracy."""

    label: str
    stack: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    status: str | None = None
    error: str | None = None
    accelerator: str | None = None
    gpus: int | None = None
    nodes: int | None = None
    model: str | None = None
    precision: str | None = None
    engine: str | None = None
    endpoint: str | None = None
    image: str | None = None
    """The image reference every node ran (a digest when the stack pinned a tag)."""
    image_source: str | None = None
    image_digests: tuple[str, ...] = ()
    hosts: tuple[Mapping[str, Any], ...] = ()
    """Each host's facts as the stack's outputs give them."""
    verification: Any = None
    points: tuple[PointResult, ...] = ()
    accuracy: AccuracyResult | None = None

    def to_json(self) -> dict[str, Any]:
        """The variant as results.json holds it."""
        return {
            "label": self.label,
            "stack": self.stack,
            "overrides": self.overrides,
            "status": self.status,
            "error": self.error,
            "accelerator": self.accelerator,
            "gpus": self.gpus,
            "nodes": self.nodes,
            "model": self.model,
            "precision": self.precision,
            "engine": self.engine,
            "endpoint": self.endpoint,
            "image": self.image,
            "image_source": self.image_source,
            "image_digests": list(self.image_digests),
            "hosts": list(self.hosts),
            "verification": self.verification,
            "points": [p.to_json() for p in self.points],
            "accuracy": self.accuracy.to_json() if self.accuracy else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VariantResult:
        """Read back; a key the file lacks reads as empty."""
        accuracy = data.get("accuracy")
        return cls(
            label=str(data["label"]),
            stack=data.get("stack"),
            overrides=data.get("overrides") or {},
            status=data.get("status"),
            error=data.get("error"),
            accelerator=data.get("accelerator"),
            gpus=data.get("gpus"),
            nodes=data.get("nodes"),
            model=data.get("model"),
            precision=data.get("precision"),
            engine=data.get("engine"),
            endpoint=data.get("endpoint"),
            image=data.get("image"),
            image_source=data.get("image_source"),
            image_digests=tuple(data.get("image_digests") or ()),
            hosts=tuple(data.get("hosts") or ()),
            verification=data.get("verification"),
            points=tuple(PointResult.from_json(p) for p in data.get("points") or ()),
            accuracy=AccuracyResult.from_json(accuracy) if accuracy else None,
        )


@dataclass(frozen=True)
class CampaignResults:
    """The whole campaign: its file, machine, times, baseline variant, seeds, teardown
    policy and every variant in the file's order."""

    campaign: str | None
    variants: tuple[VariantResult, ...]
    baseline: str | None = None
    description: str | None = None
    file: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    machine: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[str, ...] = ()
    teardown: str | None = None

    def variant(self, label: str) -> VariantResult | None:
        """The variant labelled ``label``, if there is one."""
        return next((v for v in self.variants if v.label == label), None)

    def to_json(self) -> dict[str, Any]:
        """results.json's content."""
        return {
            "schema": SCHEMA,
            "campaign": self.campaign,
            "description": self.description,
            "file": self.file,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "machine": self.machine,
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "teardown": self.teardown,
            "variants": [v.to_json() for v in self.variants],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CampaignResults:
        """Read back; raises :class:`ResultsError` when ``variants`` is not a list or the
        baseline is not one of them."""
        if not isinstance(data.get("variants"), list):
            raise ResultsError("'variants' must be a list (is this a results.json?)")
        labels = [v.get("label") for v in data["variants"]]
        baseline = data.get("baseline")
        if labels and baseline not in labels:
            raise ResultsError(
                f"baseline '{baseline}' is not a variant; valid: {', '.join(map(str, labels))}"
            )
        return cls(
            campaign=data.get("campaign"),
            variants=tuple(VariantResult.from_json(v) for v in data["variants"]),
            baseline=baseline,
            description=data.get("description"),
            file=data.get("file"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            machine=data.get("machine") or {},
            seeds=tuple(str(s) for s in data.get("seeds") or ()),
            teardown=data.get("teardown"),
        )


def load_results(path: Path) -> CampaignResults:
    """The campaign results in ``path``; raises :class:`ResultsError` naming the file
    when it cannot be read or is not a campaign's results."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultsError(f"cannot read campaign results {path}: {e}") from e
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: 'variants' must be a list (is this a results.json?)")
    try:
        return CampaignResults.from_json(data)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from e


def write_results(results: CampaignResults, path: Path) -> Path:
    """Write ``results`` to ``path`` atomically (a temp file, then a rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results.to_json(), indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def build_results(campaign: Campaign, state: CampaignState) -> CampaignResults:
    """The results of ``campaign`` as far as its journal ``state`` goes."""
    started = state.started or {}
    return CampaignResults(
        campaign=campaign.name,
        description=campaign.spec.description,
        file=str(campaign.path),
        started_at=started.get("ts"),
        finished_at=state.finished_at,
        machine=started.get("machine") or machine_info(),
        baseline=campaign.spec.baseline_label,
        seeds=tuple(campaign.spec.seeds),
        teardown=campaign.spec.teardown,
        variants=tuple(
            _variant_result(campaign, v, state.variant(v.label)) for v in campaign.variants
        ),
    )


def machine_info() -> dict[str, Any]:
    """The machine that ran the campaign."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def parse_load(value: object) -> float:
    """A load as results.json or the journal writes it (``"inf"`` for unbounded)."""
    return math.inf if value in ("inf", None) else float(str(value))


def json_load(load: float) -> float | int | str:
    """A load as results.json writes it: ``"inf"``, an int when whole, else the float."""
    if math.isinf(load):
        return "inf"
    return int(load) if load == int(load) else load


def finite_number(value: object) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _variant_result(campaign: Campaign, variant: Variant, state: VariantState) -> VariantResult:
    spec = variant.stack
    outputs = state.outputs
    engine = outputs.get("engine") or {}
    order = {(s.name, load_label(load)): i for i, (s, load) in enumerate(campaign.points())}
    points = []
    for key in sorted(state.points, key=lambda k: order.get(k, math.inf)):
        record = state.points[key]
        points.append(
            PointResult(
                sweep=record["kind"],
                sweep_name=record["sweep"],
                load=parse_load(record["load"]),
                metrics=record["result"],
            )
        )
    return VariantResult(
        label=variant.label,
        stack=variant.spec.stack,
        overrides=variant.spec.overrides,
        status=state.status,
        error=state.error,
        accelerator=spec.topology.accelerator,
        gpus=spec.topology.nodes * spec.topology.gpus_per_node,
        nodes=spec.topology.nodes,
        model=spec.model.id,
        precision=spec.model.precision,
        engine=spec.engine.name,
        endpoint=outputs.get("endpoint"),
        image=engine.get("image"),
        image_source=engine.get("image_source"),
        image_digests=tuple(engine.get("image_digests") or ()),
        hosts=tuple(outputs.get("hosts") or ()),
        verification=outputs.get("verification"),
        points=tuple(points),
        accuracy=AccuracyResult.from_json(state.accuracy) if state.accuracy else None,
    )
