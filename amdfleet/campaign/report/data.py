"""The report's data: sweep rows with ratios, seed matches, accuracy and reproducibility,
shaped from :class:`~amdfleet.campaign.results.CampaignResults` into what ``report.json``
holds (see the package docstring for the ratios and the seed matching)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amdfleet.campaign.results import CampaignResults, PointResult, VariantResult, finite_number
from amdfleet.catalog.baselines import BASELINES, Baseline
from amdfleet.tables import Align

SEED_METRICS = (
    "output_throughput",
    "total_token_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "p99_e2el_ms",
)
_CONCURRENCY = re.compile(r"concurrency (\d+)")
_GPU_COUNT = re.compile(r"^(\d+)x ")


@dataclass(frozen=True)
class SeedMatch:
    """A baseline that applies to a variant (see the package docstring)."""

    baseline: Baseline
    variant: str
    load: float | None
    gpus: int | None


@dataclass(frozen=True)
class Table:
    """One table of the report, rendered to markdown and to HTML from the same rows."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]
    align: Sequence[Align]
    note: str = ""


@dataclass
class Report:
    """Everything rendered: tables, plot files and the notes for skipped plots."""

    data: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def report_data(results: CampaignResults) -> dict[str, Any]:
    """The tables' data (what ``report.json`` holds, before plot names are added)."""
    matches = seed_matches(results)
    return {
        "schema": 1,
        "campaign": results.campaign,
        "baseline": results.baseline,
        "sweeps": [
            {"name": name, "kind": kind, "rows": sweep_rows(results, name)}
            for name, kind in sweeps(results)
        ],
        "seeds": seed_rows(results, matches),
        "seeds_without_numbers": seeds_without_numbers(results),
        "accuracy": accuracy_rows(results, matches),
        "reproducibility": reproducibility(results),
    }


def sweeps(results: CampaignResults) -> list[tuple[str, str]]:
    """(sweep name, kind) in the order the points first appear."""
    seen: dict[str, str] = {}
    for v in results.variants:
        for p in v.points:
            seen.setdefault(p.name, p.sweep)
    return list(seen.items())


def sweep_rows(results: CampaignResults, name: str) -> list[dict[str, Any]]:
    """One row per variant and load of sweep ``name``, with the ratio to the baseline."""
    base = points_by_load(results, str(results.baseline), name)
    rows = []
    for v in results.variants:
        for load, p in points_by_load(results, v.label, name).items():
            ref = base.get(load)
            rows.append(
                {
                    "variant": v.label,
                    "load": p.load_json,
                    "output_throughput": p.metric("output_throughput"),
                    "total_token_throughput": p.metric("total_token_throughput"),
                    "ratio_to_baseline": ratio(
                        p.metric("output_throughput"),
                        ref.metric("output_throughput") if ref else None,
                    ),
                    "median_ttft_ms": p.metric("median_ttft_ms"),
                    "p99_ttft_ms": p.metric("p99_ttft_ms"),
                    "median_tpot_ms": p.metric("median_tpot_ms"),
                    "p99_tpot_ms": p.metric("p99_tpot_ms"),
                    "completed": p.metrics.get("completed"),
                    "failed": p.metrics.get("failed") or 0,
                    "failure_reasons": p.failure_reasons,
                    "output_tok_s_per_gpu": per_gpu(p, v),
                    "tok_s_per_user": per_user(p),
                }
            )
    return rows


def seed_matches(results: CampaignResults) -> list[SeedMatch]:
    """The campaign seeds' baselines that apply to each variant."""
    wanted = {s.zfill(3) for s in results.seeds}
    found = []
    for v in results.variants:
        for b in BASELINES.values():
            if _seed_of(b) in wanted and _applies(b, v):
                found.append(SeedMatch(b, v.label, _baseline_load(b), _baseline_gpus(b)))
    return found


def seed_rows(results: CampaignResults, matches: Sequence[SeedMatch]) -> list[dict[str, Any]]:
    """One row per matched seed number that is not accuracy: published, observed, ratio."""
    rows = []
    for m in matches:
        variant = results.variant(m.variant)
        if variant is None or not variant.points:
            continue
        point = _concurrency_point(results, m.variant, m.load)
        for metric, published in m.baseline.metrics.items():
            if metric not in SEED_METRICS:
                continue
            observed = point.metric(metric) if point else None
            rows.append(
                {
                    "baseline": m.baseline.id,
                    "source": m.baseline.source,
                    "hardware": m.baseline.hardware,
                    "variant": m.variant,
                    "concurrency": m.load,
                    "metric": metric,
                    "published": published,
                    "observed": observed,
                    "ratio": ratio(observed, published),
                    "note": m.baseline.note,
                }
            )
    return rows


def seeds_without_numbers(results: CampaignResults) -> list[str]:
    """The campaign's seeds that have no baseline numbers to place."""
    have = {_seed_of(b) for b in BASELINES.values()}
    return [s for s in (s.zfill(3) for s in results.seeds) if s not in have]


def accuracy_rows(results: CampaignResults, matches: Sequence[SeedMatch]) -> list[dict[str, Any]]:
    """GSM8K per variant with stderr, and the seed's published score when one applies."""
    rows = []
    for v in results.variants:
        acc = v.accuracy
        if acc is None:
            continue
        seeds = [m.baseline for m in matches if m.variant == v.label]
        ref = next((b for b in seeds if "gsm8k_flexible_extract" in b.metrics), None)
        rows.append(
            {
                "variant": v.label,
                "task": acc.task,
                "n": acc.n,
                "flexible_extract": finite_number(acc.flexible_extract),
                "flexible_extract_stderr": finite_number(acc.flexible_extract_stderr),
                "strict_match": finite_number(acc.strict_match),
                "strict_match_stderr": finite_number(acc.strict_match_stderr),
                "seed": ref.id if ref else None,
                "seed_source": ref.source if ref else None,
                "seed_flexible_extract": ref.metrics["gsm8k_flexible_extract"] if ref else None,
                "seed_strict_match": ref.metrics.get("gsm8k_strict_match") if ref else None,
            }
        )
    return rows


def reproducibility(results: CampaignResults) -> dict[str, Any]:
    """What it takes to run the campaign again: file, machine, and per variant stack,
    overrides, engine, image, digests and hosts."""
    return {
        "file": results.file,
        "machine": dict(results.machine),
        "started_at": results.started_at,
        "finished_at": results.finished_at,
        "teardown": results.teardown,
        "variants": [
            {
                "label": v.label,
                "stack": v.stack,
                "status": v.status,
                "error": v.error,
                "overrides": dict(v.overrides),
                "engine": v.engine,
                "model": v.model,
                "precision": v.precision,
                "accelerator": v.accelerator,
                "gpus": v.gpus,
                "nodes": v.nodes,
                "image": v.image,
                "image_source": v.image_source,
                "image_digests": list(v.image_digests),
                "hosts": [_host(h) for h in v.hosts],
            }
            for v in results.variants
        ],
    }


def points_by_load(results: CampaignResults, label: str, name: str) -> dict[float, PointResult]:
    """The variant's points of sweep ``name`` by load, ascending (``inf`` last)."""
    v = results.variant(label)
    pts = [p for p in (v.points if v else ()) if p.name == name]
    return {p.load: p for p in sorted(pts, key=lambda p: p.load)}


def per_gpu(point: PointResult, variant: VariantResult) -> float | None:
    """Output tok/s per GPU."""
    tput, gpus = point.metric("output_throughput"), variant.gpus
    return tput / gpus if tput is not None and isinstance(gpus, int) and gpus > 0 else None


def per_user(point: PointResult) -> float | None:
    """Tok/s per user (interactivity): 1000 / median TPOT."""
    tpot = point.metric("median_tpot_ms")
    return 1000.0 / tpot if tpot else None


def ratio(observed: float | None, reference: float | None) -> float | None:
    """``observed / reference`` when both are numbers and the reference is not zero."""
    a, b = finite_number(observed), finite_number(reference)
    return a / b if a is not None and b else None


def short_id(baseline_id: str) -> str:
    """``seed000-mi325x-405b-fp8-c10`` -> ``seed000``: the seed is enough on a plot."""
    return baseline_id.split("-", 1)[0]


def fmt(value: object, digits: int = 2) -> str:
    """A number as the tables print it: whole numbers bare, else ``digits`` decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "inf"
        if value.is_integer() and digits == 2:
            return str(int(value))
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    """A ratio as ``1.23×``."""
    return "" if value is None else f"{value:.2f}×"


def _concurrency_point(
    results: CampaignResults, label: str, load: float | None
) -> PointResult | None:
    if load is None:
        return None
    for name, kind in sweeps(results):
        if kind == "concurrency":
            point = points_by_load(results, label, name).get(load)
            if point:
                return point
    return None


def _seed_of(b: Baseline) -> str:
    return b.id.removeprefix("seed")[:3]


def _applies(b: Baseline, v: VariantResult) -> bool:
    accel = str(v.accelerator or "").lower()
    return (
        b.model_id == v.model
        and b.precision == v.precision
        and b.engine == v.engine
        and bool(accel)
        and accel in b.hardware.lower().split()
    )


def _baseline_load(b: Baseline) -> float | None:
    found = _CONCURRENCY.search(b.workload)
    return float(found.group(1)) if found else None


def _baseline_gpus(b: Baseline) -> int | None:
    found = _GPU_COUNT.match(b.hardware)
    return int(found.group(1)) if found else None


def _host(h: Mapping[str, Any]) -> dict[str, Any]:
    gpus = h.get("gpus")
    kinds = (
        sorted({str(g.get("accelerator")) for g in gpus if isinstance(g, dict)})
        if isinstance(gpus, list)
        else []
    )
    return {
        "name": h.get("name"),
        "address": h.get("address"),
        "hostname": h.get("hostname"),
        "gpus": len(gpus) if isinstance(gpus, list) else gpus,
        "gpu_models": kinds,
        "rocm_version": h.get("rocm_version"),
        "os": h.get("os"),
        "kernel": h.get("kernel"),
    }
