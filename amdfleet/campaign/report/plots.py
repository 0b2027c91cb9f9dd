"""The report's PNG plots: throughput and latency against concurrency, the
throughput-vs-interactivity frontier, the request-rate sweep and GSM8K accuracy.

matplotlib is imported only when plots are drawn (Agg canvas, no pyplot state). A plot
with no data is skipped with the reason, which the rendered report shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from amdfleet.campaign.report.axes import load_axis, log_plain_axis
from amdfleet.campaign.report.data import (
    Report,
    fmt,
    per_gpu,
    per_user,
    points_by_load,
    seed_matches,
    short_id,
    sweeps,
)
from amdfleet.campaign.results import CampaignResults, PointResult, VariantResult

PLOTS = (
    "throughput_vs_concurrency.png",
    "latency_vs_load.png",
    "frontier.png",
    "request_rate.png",
    "accuracy.png",
)


def draw_plots(results: CampaignResults, report: Report, out_dir: Path) -> None:
    """Draw every plot that has data into ``out_dir``; record the others as skipped."""
    for name, draw in _PLOTTERS.items():
        reason = draw(results, report, out_dir / name)
        if reason:
            report.skipped[name] = reason
        else:
            report.plots[name] = out_dir / name


_SEED_STYLE: dict[str, Any] = {
    "marker": "*",
    "markersize": 14,
    "markerfacecolor": "none",
    "markeredgecolor": "black",
    "markeredgewidth": 1.3,
    "linestyle": "none",
}


def _plot_throughput(results: CampaignResults, report: Report, path: Path) -> str:
    curves = _curves(results, "concurrency")
    if not curves:
        return "no concurrency sweep has points"
    fig, axes = _figure(1, 2, width=13)
    for ax, key, title in (
        (axes[0], "output_throughput", "Output token throughput"),
        (axes[1], "total_token_throughput", "Total token throughput (in + out)"),
    ):
        for label, color, _, pts in curves:
            xs, ys = _xy(pts, key)
            ax.plot(xs, ys, "o-", color=color, label=label)
        if key == "output_throughput":
            _seed_points(ax, report.data["seeds"], "output_throughput")
        load_axis(ax, "concurrency")
        ax.set_ylabel("tokens/s")
        ax.set_title(title)
    _legend(axes[0])
    return _save(fig, path)


def _plot_latency(results: CampaignResults, report: Report, path: Path) -> str:
    curves = _curves(results, "concurrency")
    if not curves:
        return "no concurrency sweep has points"
    fig, axes = _figure(1, 2, width=13)
    for ax, metric, title in (
        (axes[0], "ttft", "Time to first token"),
        (axes[1], "tpot", "Time per output token"),
    ):
        for label, color, _, pts in curves:
            for stat, style in (("median", "-"), ("p99", "--")):
                xs, ys = _xy(pts, f"{stat}_{metric}_ms")
                ax.plot(xs, ys, marker="o", linestyle=style, color=color, label=f"{label} {stat}")
        _seed_points(ax, report.data["seeds"], f"p99_{metric}_ms", "seed p99")
        load_axis(ax, "concurrency")
        log_plain_axis(ax, "y")
        ax.set_ylabel(f"{metric.upper()} (ms, log scale)")
        ax.set_title(f"{title}: solid median, dashed p99")
    _legend(axes[0], handlelength=4.0)  # long enough to show a dash between the markers
    return _save(fig, path)


def _plot_frontier(results: CampaignResults, report: Report, path: Path) -> str:
    curves = [
        (label, color, variant, [p for p in pts if per_user(p) and per_gpu(p, variant)])
        for label, color, variant, pts in _curves(results, "concurrency")
    ]
    curves = [c for c in curves if c[3]]
    if not curves:
        return "no concurrency point has a median TPOT and a GPU count"
    fig, axes = _figure(1, 1, width=9)
    ax = axes[0]
    for label, color, variant, pts in curves:
        xs = [per_user(p) or 0.0 for p in pts]
        ys = [per_gpu(p, variant) or 0.0 for p in pts]
        ax.plot(xs, ys, "o-", color=color, label=label)
        for x, y, p in zip(xs, ys, pts, strict=True):
            ax.annotate(
                f"c{fmt(p.load)}",
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
    log_plain_axis(ax, "x")
    log_plain_axis(ax, "y")
    ax.set_xlabel("tok/s per user (1000 / median TPOT)")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("Throughput vs interactivity (points labelled by concurrency)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def _plot_request_rate(results: CampaignResults, report: Report, path: Path) -> str:
    curves = [
        (label, color, variant, [p for p in pts if p.finite])
        for label, color, variant, pts in _curves(results, "request_rate")
    ]
    curves = [c for c in curves if c[3]]
    if not curves:
        return "the campaign has no request-rate sweep with a finite rate"
    fig, axes = _figure(1, 2, width=13)
    for ax, key, ylabel, title in (
        (axes[0], "output_throughput", "output tok/s", "Achieved output throughput"),
        (axes[1], "p99_ttft_ms", "p99 TTFT (ms)", "p99 time to first token"),
    ):
        for label, color, _, pts in curves:
            xs, ys = _xy(pts, key)
            ax.plot(xs, ys, "o-", color=color, label=label)
            for p in pts:
                value = p.metric(key)
                bad = p.failed + sum(p.failure_reasons.values())
                if bad and value is not None:
                    ax.plot(
                        [p.load],
                        [value],
                        "x",
                        color="red",
                        markersize=14,
                        markeredgewidth=2.5,
                    )
                    ax.annotate(
                        f"{p.failed} failed",
                        (p.load, value),
                        textcoords="offset points",
                        xytext=(-10, 10),
                        color="red",
                        fontsize=9,
                        ha="right",
                    )
        load_axis(ax, "offered request rate (req/s)")
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


def _plot_accuracy(results: CampaignResults, report: Report, path: Path) -> str:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [r for r in report.data["accuracy"] if r["flexible_extract"] is not None]
    if not rows:
        return "no variant has an accuracy result"
    fig, axes = _figure(1, 1, width=max(6.0, 1.6 * len(rows) + 3))
    ax = axes[0]
    width = 0.38
    # The bars take their variant's colour, so the legend shows the styles uncoloured.
    handles: list[Any] = [
        Patch(facecolor="white", edgecolor="black", label="flexible-extract"),
        Patch(facecolor="white", edgecolor="black", hatch="//", label="strict-match"),
    ]
    for i, r in enumerate(rows):
        for dx, key, hatch in (
            (-width / 2, "flexible_extract", ""),
            (width / 2, "strict_match", "//"),
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
                alpha=0.85,
            )
            # On a white box: the hatching runs through bare text. Lifted off the axis
            # when the bar is too low to hold it (a random model scores 0).
            ax.annotate(
                f"{r[key]:.3f}",
                (i + dx, max(r[key] / 2, 0.04)),
                ha="center",
                va="center",
                fontsize=9,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"},
            )
        if r["seed_flexible_extract"] is not None:
            ax.hlines(
                r["seed_flexible_extract"], i - width, i + width, colors="black", linestyles="--"
            )
            ax.annotate(
                short_id(r["seed"]),
                (i, r["seed_flexible_extract"]),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=7,
            )
            if len(handles) == 2:
                handles.append(
                    Line2D([], [], color="black", linestyle="--", label="seed flexible-extract")
                )
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("exact match (± stderr)")
    ax.set_title("GSM8K 5-shot accuracy")
    # Below the axes: inside, it covers the values of low bars (a random model scores 0).
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8)
    return _save(fig, path)


_PLOTTERS: dict[str, Callable[[CampaignResults, Report, Path], str]] = {
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


def _legend(ax: Any, handlelength: float = 2.0) -> None:
    ax.legend(fontsize=8, loc="best", framealpha=0.85, handlelength=handlelength)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _labels(results: CampaignResults) -> list[str]:
    return [v.label for v in results.variants]


def _curves(
    results: CampaignResults, kind: str
) -> list[tuple[str, str, VariantResult, list[PointResult]]]:
    """(legend label, colour, variant, its points by load) per variant and sweep of this
    kind, finite loads only."""
    names = [n for n, k in sweeps(results) if k == kind]
    out = []
    for i, v in enumerate(results.variants):
        for name in names:
            pts = [p for p in points_by_load(results, v.label, name).values() if p.finite]
            if pts:
                label = v.label if len(names) == 1 else f"{v.label} · {name}"
                out.append((label, _color(i), v, pts))
    return out


def _xy(pts: Sequence[PointResult], key: str) -> tuple[list[float], list[float]]:
    kept = [(p.load, p.metric(key)) for p in pts]
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
            short_id(r["baseline"]),
            (r["concurrency"], r["published"]),
            textcoords="offset points",
            xytext=(0, 9),
            fontsize=7,
            ha="center",
        )


def _seed_frontier(results: CampaignResults) -> list[tuple[float, float, str]]:
    out = []
    for m in seed_matches(results):
        tpot = m.baseline.metrics.get("median_tpot_ms")
        tput = m.baseline.metrics.get("output_throughput")
        if tpot and tput and m.gpus:
            out.append((1000.0 / tpot, tput / m.gpus, short_id(m.baseline.id)))
    return list(dict.fromkeys(out))
