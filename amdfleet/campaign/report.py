"""A campaign's report: markdown, JSON, a self-contained HTML page and PNG plots.

Input is only the campaign's ``results.json`` (the runner's contract: a list of
variants, each with its stack, inventory, image digests, sweep points under ``vllm bench
serve`` key names and an optional GSM8K result) plus the seeds' published numbers in
:mod:`amdfleet.catalog.baselines`.

Ratios. Every table gives each variant's output throughput as a ratio to the campaign's
``baseline`` variant at the same sweep and load, and each matched seed number as
``observed / published``.

Seed matching. A baseline applies to a variant when its seed is one of the campaign's
``seeds`` and its model, precision, engine and accelerator all match the variant's
(the accelerator is matched against the baseline's ``hardware``, e.g. ``mi325x`` in
"8x MI325X", so NVIDIA numbers never match an AMD variant). It is placed at its
workload's concurrency ("concurrency N" in ``Baseline.workload``) on the concurrency
plots, and its observed value is the variant's point at that concurrency, if the
campaign measured one. Accuracy baselines (``gsm8k_*``) apply whatever the load.
Seeds that publish no numbers (seed 001 shows charts only) are listed as such.

Derived figures: output tok/s per GPU = ``output_throughput / gpus``; tok/s per user
(interactivity) = ``1000 / median_tpot_ms``.

matplotlib is imported only when plots are drawn (Agg canvas, no pyplot state), so
``amdfleet plan`` and the rest of the CLI never load it. A plot with no data is skipped
and the markdown says why.

Re-render a report: ``python -m amdfleet.campaign.report RESULTS.json OUT_DIR``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amdfleet.catalog.baselines import BASELINES, Baseline
from amdfleet.errors import AmdFleetError
from amdfleet.tables import Align, table

PLOTS = (
    "throughput_vs_concurrency.png",
    "latency_vs_load.png",
    "frontier.png",
    "request_rate.png",
    "accuracy.png",
)
_SEED_METRICS = (
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


class ReportError(AmdFleetError):
    """results.json cannot be read as a campaign's results."""


@dataclass(frozen=True)
class Table:
    """One table of the report, rendered to markdown and to HTML from the same rows."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]
    align: Sequence[Align]
    note: str = ""


@dataclass(frozen=True)
class SeedMatch:
    """A baseline that applies to a variant (see the module docstring)."""

    baseline: Baseline
    variant: str
    load: float | None
    gpus: int | None


@dataclass
class Report:
    """Everything rendered: tables, plot files and the notes for skipped plots."""

    data: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def write_report(results_path: Path, out_dir: Path) -> list[Path]:
    """Render ``results_path`` into ``out_dir``; returns the files written.

    Writes ``report.md``, ``report.json``, ``report.html`` and one PNG per plot that
    has data. Raises :class:`ReportError` when the file is not a campaign's results.
    """
    results = load_results(results_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(data=report_data(results))
    report.tables = build_tables(results, report.data)
    draw_plots(results, report, out_dir)
    report.data["plots"] = {name: p.name for name, p in report.plots.items()}
    report.data["skipped_plots"] = dict(report.skipped)
    md = out_dir / "report.md"
    md.write_text(render_markdown(results, report), encoding="utf-8")
    js = out_dir / "report.json"
    js.write_text(json.dumps(report.data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(results, report), encoding="utf-8")
    return [md, js, page, *report.plots.values()]


def load_results(path: Path) -> dict[str, Any]:
    """The parsed results file, checked for the keys the report needs."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read campaign results {path}: {e}") from e
    if not isinstance(results, dict) or not isinstance(results.get("variants"), list):
        raise ReportError(f"{path}: 'variants' must be a list (is this a results.json?)")
    labels = [v.get("label") for v in results["variants"]]
    baseline = results.get("baseline")
    if labels and baseline not in labels:
        raise ReportError(
            f"{path}: baseline '{baseline}' is not a variant; valid: {', '.join(map(str, labels))}"
        )
    return results


def report_data(results: Mapping[str, Any]) -> dict[str, Any]:
    """The tables' data (what ``report.json`` holds, before plot names are added)."""
    matches = seed_matches(results)
    return {
        "schema": 1,
        "campaign": results.get("campaign"),
        "baseline": results.get("baseline"),
        "sweeps": [
            {"name": name, "kind": kind, "rows": sweep_rows(results, name)}
            for name, kind in sweeps(results)
        ],
        "seeds": seed_rows(results, matches),
        "seeds_without_numbers": seeds_without_numbers(results),
        "accuracy": accuracy_rows(results, matches),
        "reproducibility": reproducibility(results),
    }


def sweeps(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(sweep name, kind) in the order the points first appear."""
    seen: dict[str, str] = {}
    for v in results["variants"]:
        for p in v.get("points") or []:
            seen.setdefault(str(p.get("sweep_name") or p["sweep"]), p["sweep"])
    return list(seen.items())


def sweep_rows(results: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """One row per variant and load of sweep ``name``, with the ratio to the baseline."""
    base = _points(results, str(results.get("baseline")), name)
    rows = []
    for v in results["variants"]:
        for load, p in _points(results, v["label"], name).items():
            ref = base.get(load)
            rows.append(
                {
                    "variant": v["label"],
                    "load": p["load"],
                    "output_throughput": _num(p.get("output_throughput")),
                    "total_token_throughput": _num(p.get("total_token_throughput")),
                    "ratio_to_baseline": _ratio(p.get("output_throughput"), ref),
                    "median_ttft_ms": _num(p.get("median_ttft_ms")),
                    "p99_ttft_ms": _num(p.get("p99_ttft_ms")),
                    "median_tpot_ms": _num(p.get("median_tpot_ms")),
                    "p99_tpot_ms": _num(p.get("p99_tpot_ms")),
                    "completed": p.get("completed"),
                    "failed": p.get("failed") or 0,
                    "failure_reasons": dict(p.get("failure_reasons") or {}),
                    "output_tok_s_per_gpu": _per_gpu(p, v),
                    "tok_s_per_user": _per_user(p),
                }
            )
    return rows


def seed_matches(results: Mapping[str, Any]) -> list[SeedMatch]:
    """The campaign seeds' baselines that apply to each variant."""
    wanted = {str(s).zfill(3) for s in results.get("seeds") or []}
    found = []
    for v in results["variants"]:
        for b in BASELINES.values():
            if _seed_of(b) in wanted and _applies(b, v):
                found.append(SeedMatch(b, v["label"], _baseline_load(b), _baseline_gpus(b)))
    return found


def seed_rows(results: Mapping[str, Any], matches: Sequence[SeedMatch]) -> list[dict[str, Any]]:
    """One row per matched seed number that is not accuracy: published, observed, ratio."""
    rows = []
    for m in matches:
        if not (_by_label(results, m.variant) or {}).get("points"):
            continue
        point = _concurrency_point(results, m.variant, m.load)
        for metric, published in m.baseline.metrics.items():
            if metric not in _SEED_METRICS:
                continue
            observed = _num(point.get(metric)) if point else None
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
                    "ratio": _ratio(observed, published),
                    "note": m.baseline.note,
                }
            )
    return rows


def seeds_without_numbers(results: Mapping[str, Any]) -> list[str]:
    """The campaign's seeds that have no baseline numbers to place."""
    have = {_seed_of(b) for b in BASELINES.values()}
    return [s for s in (str(s).zfill(3) for s in results.get("seeds") or []) if s not in have]


def accuracy_rows(results: Mapping[str, Any], matches: Sequence[SeedMatch]) -> list[dict[str, Any]]:
    """GSM8K per variant with stderr, and the seed's published score when one applies."""
    rows = []
    for v in results["variants"]:
        acc = v.get("accuracy")
        if not acc:
            continue
        seeds = [m.baseline for m in matches if m.variant == v["label"]]
        ref = next((b for b in seeds if "gsm8k_flexible_extract" in b.metrics), None)
        rows.append(
            {
                "variant": v["label"],
                "task": acc.get("task", "gsm8k"),
                "n": acc.get("n", acc.get("limit")),
                "flexible_extract": _num(acc.get("flexible_extract")),
                "flexible_extract_stderr": _num(acc.get("flexible_extract_stderr")),
                "strict_match": _num(acc.get("strict_match")),
                "strict_match_stderr": _num(acc.get("strict_match_stderr")),
                "seed": ref.id if ref else None,
                "seed_source": ref.source if ref else None,
                "seed_flexible_extract": ref.metrics["gsm8k_flexible_extract"] if ref else None,
                "seed_strict_match": ref.metrics.get("gsm8k_strict_match") if ref else None,
            }
        )
    return rows


def reproducibility(results: Mapping[str, Any]) -> dict[str, Any]:
    """What it takes to run the campaign again: file, machine, and per variant stack,
    overrides, engine, image, digests and hosts."""
    return {
        "file": results.get("file"),
        "machine": results.get("machine") or {},
        "started_at": results.get("started_at"),
        "finished_at": results.get("finished_at"),
        "teardown": results.get("teardown"),
        "variants": [
            {
                "label": v["label"],
                "stack": v.get("stack"),
                "status": v.get("status"),
                "error": v.get("error"),
                "overrides": v.get("overrides") or {},
                "engine": v.get("engine"),
                "model": v.get("model"),
                "precision": v.get("precision"),
                "accelerator": v.get("accelerator"),
                "gpus": v.get("gpus"),
                "nodes": v.get("nodes"),
                "image": v.get("image"),
                "image_source": v.get("image_source"),
                "image_digests": list(v.get("image_digests") or []),
                "hosts": [_host(h) for h in v.get("hosts") or []],
            }
            for v in results["variants"]
        ],
    }


def build_tables(results: Mapping[str, Any], data: Mapping[str, Any]) -> list[Table]:
    """The report's tables in order: sweeps, seeds, accuracy, reproducibility."""
    labels = [v["label"] for v in results["variants"]]
    base = results.get("baseline")
    out = [_sweep_table(s, labels, str(base)) for s in data["sweeps"]]
    if data["seeds"]:
        out.append(
            Table(
                "Seed references",
                (
                    "seed",
                    "source",
                    "hardware",
                    "variant",
                    "concurrency",
                    "metric",
                    "published",
                    "observed",
                    "observed / published",
                ),
                [
                    (
                        r["baseline"],
                        r["source"],
                        r["hardware"],
                        r["variant"],
                        _fmt(r["concurrency"]),
                        r["metric"],
                        _fmt(r["published"]),
                        _fmt(r["observed"]),
                        _fmt_ratio(r["ratio"]),
                    )
                    for r in data["seeds"]
                ],
                ("left",) * 4 + ("right", "left", "right", "right", "right"),
                "Observed is the variant's point at the seed's concurrency (empty: the "
                "campaign did not measure that concurrency).",
            )
        )
    if data["accuracy"]:
        out.append(
            Table(
                "Accuracy (GSM8K, 5-shot)",
                (
                    "variant",
                    "n",
                    "flexible-extract",
                    "± stderr",
                    "strict-match",
                    "± stderr",
                    "seed",
                    "seed flexible",
                    "seed strict",
                ),
                [
                    (
                        r["variant"],
                        _fmt(r["n"]),
                        _fmt(r["flexible_extract"], 4),
                        _fmt(r["flexible_extract_stderr"], 4),
                        _fmt(r["strict_match"], 4),
                        _fmt(r["strict_match_stderr"], 4),
                        f"{r['seed']} ({r['seed_source']})" if r["seed"] else "",
                        _fmt(r["seed_flexible_extract"], 4),
                        _fmt(r["seed_strict_match"], 4),
                    )
                    for r in data["accuracy"]
                ],
                ("left", "right", "right", "right", "right", "right", "left", "right", "right"),
            )
        )
    out.extend(_reproducibility_tables(data["reproducibility"]))
    return out


def draw_plots(results: Mapping[str, Any], report: Report, out_dir: Path) -> None:
    """Draw every plot that has data into ``out_dir``; record the others as skipped."""
    for name, draw in _PLOTTERS.items():
        reason = draw(results, report, out_dir / name)
        if reason:
            report.skipped[name] = reason
        else:
            report.plots[name] = out_dir / name


def render_markdown(results: Mapping[str, Any], report: Report) -> str:
    """The report as markdown: summary, plots (or why they are skipped), tables."""
    lines = [f"# Campaign {results.get('campaign')}", ""]
    lines += _summary(results)
    lines += ["", "## Plots", ""]
    for name in PLOTS:
        if name in report.plots:
            lines += [f"![{name}]({name})", ""]
        else:
            lines += [f"- `{name}` skipped: {report.skipped.get(name, 'no data')}", ""]
    for t in report.tables:
        lines += [f"## {t.title}", ""]
        lines += [table(t.headers, t.rows, align=t.align, style="markdown"), ""]
        if t.note:
            lines += [t.note, ""]
    for note in _seed_notes(report.data):
        lines += [f"- {note}"]
    return "\n".join(lines).rstrip() + "\n"


def render_html(results: Mapping[str, Any], report: Report) -> str:
    """The same report as one HTML page: PNGs embedded as data URIs, no external links."""
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Campaign {esc(str(results.get('campaign')))}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:2px 6px}td.r{text-align:right}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Campaign {esc(str(results.get('campaign')))}</h1>",
        "<ul>" + "".join(f"<li>{esc(s.lstrip('- '))}</li>" for s in _summary(results)) + "</ul>",
        "<h2>Plots</h2>",
    ]
    for name in PLOTS:
        if name in report.plots:
            data = base64.b64encode(report.plots[name].read_bytes()).decode("ascii")
            parts.append(f'<p><img alt="{name}" src="data:image/png;base64,{data}"></p>')
        else:
            parts.append(f"<p><code>{name}</code> skipped: {esc(report.skipped[name])}</p>")
    for t in report.tables:
        parts.append(f"<h2>{esc(t.title)}</h2>")
        parts.append(_html_table(t))
        if t.note:
            parts.append(f"<p>{esc(t.note)}</p>")
    notes = _seed_notes(report.data)
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- plots ---------------------------------------------------------------------------

_SEED_STYLE: dict[str, Any] = {
    "marker": "*",
    "markersize": 14,
    "markerfacecolor": "none",
    "markeredgecolor": "black",
    "markeredgewidth": 1.3,
    "linestyle": "none",
}


def _plot_throughput(results: Mapping[str, Any], report: Report, path: Path) -> str:
    curves = _curves(results, "concurrency")
    if not curves:
        return "no concurrency sweep has points"
    fig, axes = _figure(1, 2, width=13)
    for ax, key, title in (
        (axes[0], "output_throughput", "Output token throughput"),
        (axes[1], "total_token_throughput", "Total token throughput (in + out)"),
    ):
        for label, color, pts in curves:
            xs, ys = _xy(pts, key)
            ax.plot(xs, ys, "o-", color=color, label=label)
        if key == "output_throughput":
            _seed_points(ax, report.data["seeds"], "output_throughput")
        _log2(ax, "concurrency")
        ax.set_ylabel("tokens/s")
        ax.set_title(title)
    _legend(axes[0])
    return _save(fig, path)


def _plot_latency(results: Mapping[str, Any], report: Report, path: Path) -> str:
    curves = _curves(results, "concurrency")
    if not curves:
        return "no concurrency sweep has points"
    fig, axes = _figure(1, 2, width=13)
    for ax, metric, title in (
        (axes[0], "ttft", "Time to first token"),
        (axes[1], "tpot", "Time per output token"),
    ):
        for label, color, pts in curves:
            for stat, style in (("median", "-"), ("p99", "--")):
                xs, ys = _xy(pts, f"{stat}_{metric}_ms")
                ax.plot(xs, ys, marker="o", linestyle=style, color=color, label=f"{label} {stat}")
        _seed_points(ax, report.data["seeds"], f"p99_{metric}_ms", "seed p99")
        _log2(ax, "concurrency")
        _log_plain(ax, "y")
        ax.set_ylabel(f"{metric.upper()} (ms, log scale)")
        ax.set_title(f"{title}: solid median, dashed p99")
    _legend(axes[0])
    return _save(fig, path)


def _plot_frontier(results: Mapping[str, Any], report: Report, path: Path) -> str:
    curves = [
        (label, color, [p for p in pts if _per_user(p) and _per_gpu(p, _variant(results, p))])
        for label, color, pts in _curves(results, "concurrency")
    ]
    curves = [c for c in curves if c[2]]
    if not curves:
        return "no concurrency point has a median TPOT and a GPU count"
    fig, axes = _figure(1, 1, width=9)
    ax = axes[0]
    for label, color, pts in curves:
        xs = [_per_user(p) or 0.0 for p in pts]
        ys = [_per_gpu(p, _variant(results, p)) or 0.0 for p in pts]
        ax.plot(xs, ys, "o-", color=color, label=label)
        for x, y, p in zip(xs, ys, pts, strict=True):
            ax.annotate(
                f"c{_fmt(p['load'])}",
                (x, y),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
                color=color,
            )
    for m in _seed_frontier(results):
        ax.plot([m[0]], [m[1]], **_SEED_STYLE)
        ax.annotate(m[2], (m[0], m[1]), textcoords="offset points", xytext=(6, -12), fontsize=7)
    ax.margins(x=0.08, y=0.1)
    _log_plain(ax, "x")
    _log_plain(ax, "y")
    ax.set_xlabel("tok/s per user (1000 / median TPOT)")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("Throughput vs interactivity (points labelled by concurrency)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def _plot_request_rate(results: Mapping[str, Any], report: Report, path: Path) -> str:
    curves = [
        (label, color, [p for p in pts if _finite(p["load"])])
        for label, color, pts in _curves(results, "request_rate")
    ]
    curves = [c for c in curves if c[2]]
    if not curves:
        return "the campaign has no request-rate sweep with a finite rate"
    fig, axes = _figure(1, 2, width=13)
    for ax, key, ylabel, title in (
        (axes[0], "output_throughput", "output tok/s", "Achieved output throughput"),
        (axes[1], "p99_ttft_ms", "p99 TTFT (ms)", "p99 time to first token"),
    ):
        for label, color, pts in curves:
            xs, ys = _xy(pts, key)
            ax.plot(xs, ys, "o-", color=color, label=label)
            for p in pts:
                bad = (p.get("failed") or 0) + sum((p.get("failure_reasons") or {}).values())
                if bad and _num(p.get(key)) is not None:
                    ax.plot(
                        [float(p["load"])],
                        [float(p[key])],
                        "x",
                        color="red",
                        markersize=14,
                        markeredgewidth=2.5,
                    )
                    ax.annotate(
                        f"{p.get('failed') or 0} failed",
                        (float(p["load"]), float(p[key])),
                        textcoords="offset points",
                        xytext=(-10, 10),
                        color="red",
                        fontsize=9,
                        ha="right",
                    )
        _log2(ax, "offered request rate (req/s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0].plot(
        [],
        [],
        "x",
        color="red",
        markersize=10,
        markeredgewidth=2.5,
        label="point with failed requests",
    )
    _legend(axes[0])
    return _save(fig, path)


def _plot_accuracy(results: Mapping[str, Any], report: Report, path: Path) -> str:
    rows = [r for r in report.data["accuracy"] if r["flexible_extract"] is not None]
    if not rows:
        return "no variant has an accuracy result"
    fig, axes = _figure(1, 1, width=max(6.0, 1.6 * len(rows) + 3))
    ax = axes[0]
    width = 0.38
    for i, r in enumerate(rows):
        for dx, key, hatch, name in (
            (-width / 2, "flexible_extract", "", "flexible-extract"),
            (width / 2, "strict_match", "//", "strict-match"),
        ):
            if r[key] is None:
                continue
            ax.bar(
                i + dx,
                r[key],
                width,
                yerr=r[f"{key}_stderr"] or 0,
                capsize=5,
                color=_color(_labels(results).index(r["variant"])),
                hatch=hatch,
                edgecolor="black",
                label=name if i == 0 else None,
                alpha=0.85,
            )
            ax.annotate(f"{r[key]:.3f}", (i + dx, r[key] / 2), ha="center", fontsize=9)
        if r["seed_flexible_extract"] is not None:
            ax.hlines(
                r["seed_flexible_extract"],
                i - width,
                i + width,
                colors="black",
                linestyles="--",
                label="seed flexible-extract" if i == 0 else None,
            )
            ax.annotate(
                _short(r["seed"]),
                (i, r["seed_flexible_extract"]),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=7,
            )
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("exact match (± stderr)")
    ax.set_title("GSM8K 5-shot accuracy")
    # Below the axes: inside, it covers the values of low bars (a random model scores 0).
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8)
    return _save(fig, path)


_PLOTTERS: dict[str, Callable[[Mapping[str, Any], Report, Path], str]] = {
    "throughput_vs_concurrency.png": _plot_throughput,
    "latency_vs_load.png": _plot_latency,
    "frontier.png": _plot_frontier,
    "request_rate.png": _plot_request_rate,
    "accuracy.png": _plot_accuracy,
}


def _figure(rows: int, cols: int, width: float) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 5.0 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig: Any, path: Path) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return ""


def _log2(ax: Any, xlabel: str) -> None:
    """A log-2 x axis ticked at the loads drawn (measured and seed), not at powers of 2;
    a load whose label would touch a rounder one's is ticked but not labelled."""
    from matplotlib.ticker import FixedLocator, NullLocator

    loads = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()})
    ax.margins(x=0.06, y=0.12)  # room for the seed and failure labels above points
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(loads))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(_readable_formatter(lambda v: _fmt(float(v))))
    ax.set_xlabel(f"{xlabel} (log2 scale)")
    ax.grid(True, which="major", alpha=0.3)


def _log_plain(ax: Any, axis: str) -> None:
    """A log scale labelled with plain numbers (``200``, ``6``, ``0.5``), not ``2×10²``,
    and only as many as can be read: every tick is drawn, a label only where it keeps
    clear of the others (see :func:`readable_ticks`), so a range over a decade reads
    ``100 200 500 1000``, never ``300400500600700800``."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    formatter = _readable_formatter(lambda v: f"{v:g}")
    target.set_major_formatter(formatter)
    target.set_minor_formatter(formatter)


def readable_ticks(
    ticks: Iterable[float],
    pixel: Callable[[float], float],
    extent: Callable[[str], float],
    text: Callable[[float], str],
) -> set[float]:
    """The ticks to label so that no two labels touch. ``pixel`` places a tick along the
    axis and ``extent`` is a label's size along it, both in pixels. The roundest ticks
    go first (powers of ten, then leading digit 5, then 2, then the rest), each kept
    when its label clears every label kept so far."""
    kept: list[tuple[float, float]] = []  # (centre, half extent) of each label placed
    shown: set[float] = set()
    for value in sorted(set(ticks), key=_roundness):
        centre, half = pixel(value), extent(text(value)) / 2
        if all(abs(centre - c) >= half + h for c, h in kept):
            kept.append((centre, half))
            shown.add(value)
    return shown


def _readable_formatter(text: Callable[[float], str]) -> Any:
    """A tick formatter labelling only :func:`readable_ticks` of the ticks in view; one
    instance serves major and minor ticks, so minor labels keep clear of major ones."""
    from matplotlib.ticker import Formatter

    class Readable(Formatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return text(x)

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            axis: Any = self.axis
            low, high = sorted(axis.get_view_interval())
            ticks = [
                v
                for v in (*axis.get_majorticklocs(), *axis.get_minorticklocs())
                if low <= v <= high and v > 0
            ]
            shown = readable_ticks(ticks, _pixel(axis), _extent(axis), text)
            return [text(v) if v in shown else "" for v in values]

    return Readable()


def _pixel(axis: Any) -> Callable[[float], float]:
    """Where a value falls along ``axis``, in pixels from its low end."""
    scale = axis.get_transform()

    def scaled(value: float) -> float:
        return float(scale.transform([value]).ravel()[0])

    low, high = (scaled(v) for v in axis.get_view_interval())
    box = axis.axes.bbox
    length = box.width if axis.axis_name == "x" else box.height

    def place(value: float) -> float:
        return float((scaled(value) - low) / (high - low) * length)

    return place


def _extent(axis: Any) -> Callable[[str], float]:
    """A tick label's size along ``axis`` in pixels, with room between neighbours: its
    width on an x axis (digits are about 0.6 em wide), its line height on a y axis."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    name = axis.axis_name
    size = rcParams["xtick.labelsize" if name == "x" else "ytick.labelsize"]
    em = FontProperties(size=size).get_size_in_points() * axis.figure.dpi / 72
    if name == "x":
        return lambda label: (0.62 * len(label) + 1.5) * em
    return lambda label: 1.6 * em


def _roundness(value: float) -> tuple[int, float]:
    """Sort key: powers of ten first, then leading digit 5, then 2, then the rest."""
    if value <= 0 or not math.isfinite(value):
        return (4, value)
    digits = f"{value:.6e}".split("e")[0].rstrip("0").rstrip(".")
    rank = {"1": 0, "5": 1, "2": 2}.get(digits, 3)
    return (rank, value)


def _legend(ax: Any) -> None:
    ax.legend(fontsize=8, loc="best", framealpha=0.85)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _labels(results: Mapping[str, Any]) -> list[str]:
    return [v["label"] for v in results["variants"]]


def _curves(results: Mapping[str, Any], kind: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(legend label, colour, points by load) per variant and sweep of this kind."""
    names = [n for n, k in sweeps(results) if k == kind]
    out = []
    for i, v in enumerate(results["variants"]):
        for name in names:
            pts = list(_points(results, v["label"], name).values())
            pts = [p for p in pts if _finite(p["load"])]
            if pts:
                label = v["label"] if len(names) == 1 else f"{v['label']} · {name}"
                out.append((label, _color(i), pts))
    return out


def _xy(pts: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    kept = [(float(p["load"]), _num(p.get(key))) for p in pts]
    return [x for x, y in kept if y is not None], [y for _, y in kept if y is not None]


def _seed_points(
    ax: Any, seeds: Sequence[Mapping[str, Any]], metric: str, label: str = "seed"
) -> None:
    placed = [r for r in seeds if r["metric"] == metric and r["concurrency"]]
    done: set[str] = set()
    for r in placed:
        if r["baseline"] in done:
            continue
        done.add(r["baseline"])
        ax.plot(
            [r["concurrency"]],
            [r["published"]],
            **_SEED_STYLE,
            label=f"{label} (published)" if len(done) == 1 else None,
        )
        ax.annotate(
            _short(r["baseline"]),
            (r["concurrency"], r["published"]),
            textcoords="offset points",
            xytext=(0, 9),
            fontsize=7,
            ha="center",
        )


def _seed_frontier(results: Mapping[str, Any]) -> list[tuple[float, float, str]]:
    out = []
    for m in seed_matches(results):
        tpot = m.baseline.metrics.get("median_tpot_ms")
        tput = m.baseline.metrics.get("output_throughput")
        if tpot and tput and m.gpus:
            out.append((1000.0 / tpot, tput / m.gpus, _short(m.baseline.id)))
    return list(dict.fromkeys(out))


# --- data helpers --------------------------------------------------------------------


def _points(results: Mapping[str, Any], label: str, name: str) -> dict[float, dict[str, Any]]:
    """The variant's points of sweep ``name`` by load, ascending (``inf`` last)."""
    v = _by_label(results, label)
    pts = [p for p in (v or {}).get("points") or [] if (p.get("sweep_name") or p["sweep"]) == name]
    return {_load(p["load"]): p for p in sorted(pts, key=lambda p: _load(p["load"]))}


def _concurrency_point(
    results: Mapping[str, Any], label: str, load: float | None
) -> dict[str, Any] | None:
    if load is None:
        return None
    for name, kind in sweeps(results):
        if kind == "concurrency":
            point = _points(results, label, name).get(load)
            if point:
                return point
    return None


def _by_label(results: Mapping[str, Any], label: str) -> dict[str, Any] | None:
    return next((v for v in results["variants"] if v["label"] == label), None)


def _variant(results: Mapping[str, Any], point: Mapping[str, Any]) -> Mapping[str, Any]:
    for v in results["variants"]:
        if any(p is point for p in v.get("points") or []):
            found: Mapping[str, Any] = v
            return found
    return {}


def _load(value: object) -> float:
    return math.inf if value in ("inf", None) else float(str(value))


def _finite(value: object) -> bool:
    return math.isfinite(_load(value))


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ratio(observed: object, reference: object) -> float | None:
    if isinstance(reference, dict):
        reference = reference.get("output_throughput")
    a, b = _num(observed), _num(reference)
    return a / b if a is not None and b else None


def _per_gpu(point: Mapping[str, Any], variant: Mapping[str, Any]) -> float | None:
    tput, gpus = _num(point.get("output_throughput")), variant.get("gpus")
    return tput / gpus if tput is not None and isinstance(gpus, int) and gpus > 0 else None


def _per_user(point: Mapping[str, Any]) -> float | None:
    tpot = _num(point.get("median_tpot_ms"))
    return 1000.0 / tpot if tpot else None


def _short(baseline_id: str) -> str:
    """``seed000-mi325x-405b-fp8-c10`` -> ``seed000``: the seed is enough on a plot."""
    return baseline_id.split("-", 1)[0]


def _seed_of(b: Baseline) -> str:
    return b.id.removeprefix("seed")[:3]


def _applies(b: Baseline, v: Mapping[str, Any]) -> bool:
    accel = str(v.get("accelerator") or "").lower()
    return (
        b.model_id == v.get("model")
        and b.precision == v.get("precision")
        and b.engine == v.get("engine")
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


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "inf"
        if value.is_integer() and digits == 2:
            return str(int(value))
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


# --- tables and text -----------------------------------------------------------------


def _sweep_table(sweep: Mapping[str, Any], labels: Sequence[str], base: str) -> Table:
    kind = sweep["kind"]
    load_name = "concurrency" if kind == "concurrency" else "req/s"
    present = [lab for lab in labels if any(r["variant"] == lab for r in sweep["rows"])]
    ratio = base in present
    headers = [load_name]
    for lab in present:
        headers += [
            f"{lab} out tok/s",
            *([f"{lab} ×{base}"] if ratio else []),
            f"{lab} p99 TTFT ms",
            f"{lab} p99 TPOT ms",
            f"{lab} failed",
        ]
    by_load: dict[float, dict[str, Mapping[str, Any]]] = {}
    for r in sweep["rows"]:
        by_load.setdefault(_load(r["load"]), {})[r["variant"]] = r
    rows = []
    for load in sorted(by_load):
        row: list[object] = [_fmt(load)]
        for lab in present:
            r = by_load[load].get(lab)
            if r is None:
                row += [""] * (5 if ratio else 4)
                continue
            row += [
                _fmt(r["output_throughput"]),
                *([_fmt_ratio(r["ratio_to_baseline"])] if ratio else []),
                _fmt(r["p99_ttft_ms"]),
                _fmt(r["p99_tpot_ms"]),
                _failed(r),
            ]
        rows.append(row)
    return Table(
        f"Sweep {sweep['name']} ({kind.replace('_', ' ')})",
        headers,
        rows,
        ["right"] * len(headers),
        f"×{base}: output tok/s divided by {base}'s at the same load." if ratio else "",
    )


def _failed(row: Mapping[str, Any]) -> str:
    reasons = row["failure_reasons"]
    if not reasons:
        return str(row["failed"])
    return f"{row['failed']} ({', '.join(f'{k}: {n}' for k, n in reasons.items())})"


def _reproducibility_tables(data: Mapping[str, Any]) -> list[Table]:
    machine = data["machine"]
    campaign = Table(
        "Reproducibility: campaign",
        ("field", "value"),
        [
            ("campaign file", data["file"]),
            ("machine", ", ".join(f"{k}={v}" for k, v in machine.items())),
            ("started", data["started_at"]),
            ("finished", data["finished_at"]),
            ("teardown", data["teardown"]),
        ],
        ("left", "left"),
    )
    variants = Table(
        "Reproducibility: variants",
        (
            "variant",
            "stack",
            "status",
            "overrides",
            "engine",
            "model",
            "precision",
            "accelerator × GPUs",
            "image (the digest that ran)",
            "from",
            "image digests",
        ),
        [
            (
                v["label"],
                v["stack"],
                v["status"] + (f": {v['error']}" if v["error"] else ""),
                json.dumps(v["overrides"], sort_keys=True),
                v["engine"],
                v["model"],
                v["precision"],
                f"{v['accelerator']} × {v['gpus']}",
                v["image"] or "",
                v["image_source"] or "",
                " ".join(v["image_digests"]),
            )
            for v in data["variants"]
        ],
        ("left",) * 11,
    )
    hosts = Table(
        "Reproducibility: hosts",
        ("variant", "name", "address", "hostname", "GPUs", "ROCm", "OS", "kernel"),
        [
            (
                v["label"],
                h["name"],
                h["address"],
                h["hostname"],
                f"{h['gpus']} {'/'.join(h['gpu_models'])}".strip(),
                h["rocm_version"],
                h["os"],
                h["kernel"],
            )
            for v in data["variants"]
            for h in v["hosts"]
        ],
        ("left",) * 8,
    )
    return [campaign, variants, hosts]


def _summary(results: Mapping[str, Any]) -> list[str]:
    lines = []
    if results.get("description"):
        lines.append(f"- {results['description']}")
    lines.append(f"- baseline variant: {results.get('baseline')}")
    for v in results["variants"]:
        n = len(v.get("points") or [])
        status = v.get("status") + (f" ({v['error']})" if v.get("error") else "")
        lines.append(
            f"- {v['label']}: {v.get('engine')} {v.get('model')} {v.get('precision')} on "
            f"{v.get('gpus')}× {v.get('accelerator')}, {n} points, {status}"
        )
    return lines


def _seed_notes(data: Mapping[str, Any]) -> list[str]:
    notes = [
        f"Seed {s} publishes no numbers the report can place (seed 001 shows charts only)"
        if s == "001"
        else f"Seed {s} has no baselines in amdfleet.catalog.baselines"
        for s in data["seeds_without_numbers"]
    ]
    by_note: dict[str, list[str]] = {}
    for r in data["seeds"]:
        if r["note"] and r["baseline"] not in by_note.setdefault(r["note"], []):
            by_note[r["note"]].append(r["baseline"])
    notes += [f"{', '.join(ids)}: {note}" for note, ids in by_note.items()]
    return notes


def _html_table(t: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in t.headers)
    body = []
    for row in t.rows:
        cells = "".join(
            f"<td{' class=r' if a == 'right' else ''}>{esc('' if c is None else str(c))}</td>"
            for c, a in zip(row, t.align, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def main(argv: Iterable[str]) -> int:
    """``python -m amdfleet.campaign.report RESULTS.json OUT_DIR``."""
    args = list(argv)
    if len(args) != 2:
        print("usage: python -m amdfleet.campaign.report RESULTS.json OUT_DIR", file=sys.stderr)
        return 2
    try:
        written = write_report(Path(args[0]), Path(args[1]))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
