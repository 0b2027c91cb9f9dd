"""How results are shown and stored: terminal tables, markdown, JSON files and plots.

The benchmark table is laid out exactly like ``vllm bench serve``'s, so users can diff
the two; every other terminal table (the accuracy table in ``lm_eval``'s columns, the
verdict) is built from one list of rows by :func:`amdfleet.tables.table`, so numbers
can be compared with the seeds' published outputs side by side. Plots use matplotlib's
object API with the Agg canvas (no pyplot global state).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amdfleet.tables import Align, table
from amdfleet.verify.bench import BenchmarkRun
from amdfleet.verify.gsm8k import TASK_VERSION, AccuracyResult
from amdfleet.verify.metrics import percentile_word
from amdfleet.verify.parity import ParityResult
from amdfleet.verify.verdict import VerificationResult, format_value

_ACCURACY_HEADERS = (
    "Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"
)  # fmt: skip
_ACCURACY_ALIGN: tuple[Align, ...] = (
    "left", "right", "left", "right", "left", "left", "right", "left", "right"
)  # fmt: skip
_SECTIONS = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
)


def render_benchmark_table(run: BenchmarkRun) -> str:
    """The run as ``vllm bench serve`` prints its result."""
    m, s = run.metrics, run.scenario
    title = " Serving Benchmark Result " + ("(interrupted) " if run.interrupted else "")
    lines = [f"{title:=^50}"]

    def row(label: str, value: object, fmt: str = "") -> None:
        lines.append(f"{label:<40} {value:<10{fmt}}")

    row("Successful requests:", m.completed)
    row("Failed requests:", m.failed)
    if s.max_concurrency is not None:
        row("Maximum request concurrency:", s.max_concurrency)
    if s.request_rate is not None and math.isfinite(s.request_rate):
        row("Request rate configured (RPS):", s.request_rate, ".2f")
    row("Benchmark duration (s):", m.duration, ".2f")
    row("Total input tokens:", m.total_input)
    row("Total generated tokens:", m.total_output)
    row("Request throughput (req/s):", m.request_throughput, ".2f")
    if m.request_goodput is not None:
        row("Request goodput (req/s):", m.request_goodput, ".2f")
    row("Output token throughput (tok/s):", m.output_throughput, ".2f")
    row("Peak output token throughput (tok/s):", m.max_output_tokens_per_s, ".2f")
    row("Peak concurrent requests:", float(m.max_concurrent_requests), ".2f")
    row("Total token throughput (tok/s):", m.total_token_throughput, ".2f")
    for key, name, header in _SECTIONS:
        stats = m.latency[key]
        lines.append(f"{header:-^50}")
        row(f"Mean {name} (ms):", stats.mean, ".2f")
        row(f"Median {name} (ms):", stats.median, ".2f")
        for p, value in stats.percentiles:
            row(f"P{percentile_word(p)} {name} (ms):", value, ".2f")
    lines.append("=" * 50)
    reasons = run.failure_reasons()
    if reasons:
        lines.append("Failed requests by reason:")
        rows = [(count, kind) for kind, count in sorted(reasons.items())]
        lines.append(table((), rows, align=("right", "left"), indent="  "))
        first = next(o.error for o in run.outputs if not o.success)
        lines.append(f"  first error: {first}")
    return "\n".join(lines)


def render_accuracy_table(result: AccuracyResult) -> str:
    """GSM8K scores in ``lm_eval``'s columns, as a markdown table."""
    rows = [
        (
            "gsm8k" if i == 0 else "",
            TASK_VERSION if i == 0 else "",
            name,
            result.num_fewshot,
            "exact_match",
            "↑",
            f"{score.value:.4f}",
            "±",
            f"{score.stderr:.4f}" if score.stderr is not None else "N/A",
        )
        for i, (name, score) in enumerate(
            (("flexible-extract", result.flexible_extract), ("strict-match", result.strict_match))
        )
    ]
    lines = [table(_ACCURACY_HEADERS, rows, align=_ACCURACY_ALIGN, style="markdown")]
    if result.failed:
        lines.append(f"({result.failed} of {len(result.samples)} requests failed; scored wrong)")
    return "\n".join(lines)


def render_parity_table(result: ParityResult) -> str:
    """Output parity per prompt: matched, or where it diverged and what the engine said."""
    ref = result.reference
    lines = [
        f"{result.matched}/{len(ref.prompts)} prompts match the reference over their first "
        f"{result.tokens} tokens ({result.dtype}; reference {ref.path}: {ref.model} "
        f"{ref.revision}, {ref.recorded_by}, {ref.recorded_at})",
        "",
        "| # | prompt | first K tokens | diverged at | engine's continuation |",
        "|---:|---|---|---:|---|",
    ]
    for p in result.prompts:
        verdict = "match" if p.matched else "**differ**"
        diverged = "" if p.diverged_at is None else str(p.diverged_at)
        said = p.error or p.observed_text
        lines.append(f"| {p.index} | {_cell(p.prompt)} | {verdict} | {diverged} | {_cell(said)} |")
    return "\n".join(lines)


def _cell(text: str, limit: int = 60) -> str:
    flat = text.replace("\n", "\\n").replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render_verdict_table(result: VerificationResult) -> str:
    """Every verdict row: observed, expected, baseline, ratio and PASS/FAIL."""
    header = ("scope", "metric", "observed", "expected", "baseline", "ratio", "verdict")
    rows = [
        (
            r.scope,
            r.metric,
            format_value(r.observed),
            r.expected or "-",
            format_value(r.baseline) if r.baseline is not None else "-",
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            {True: "PASS", False: "FAIL", None: "-"}[r.passed],
        )
        for r in result.rows
    ]
    align: tuple[Align, ...] = ("left", "left", "right", "left", "right", "right", "left")
    lines = [table(header, rows, align=align)]
    status = "PASSED" if result.passed else "FAILED"
    if result.interrupted:
        status += " (interrupted)"
    lines.append(f"verification {status}")
    return "\n".join(lines)


def render_sweep_markdown(runs: Sequence[BenchmarkRun]) -> str:
    """A markdown table with one line per run (a sweep summary)."""
    lines = [
        "| run | concurrency | rate (req/s) | ok | failed | duration (s) | output tok/s "
        "| total tok/s | mean TTFT (ms) | p99 TTFT (ms) | mean TPOT (ms) | p99 TPOT (ms) "
        "| mean ITL (ms) | p99 ITL (ms) | p99 E2EL (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        m, s = run.metrics, run.scenario
        lat = m.latency
        p99 = {k: _p99(run, k) for k in ("ttft", "tpot", "itl", "e2el")}
        lines.append(
            f"| {s.name} | {s.max_concurrency or '-'} | {_rate(s.request_rate)} "
            f"| {m.completed} | {m.failed} | {m.duration:.2f} | {m.output_throughput:.2f} "
            f"| {m.total_token_throughput:.2f} | {lat['ttft'].mean:.2f} | {p99['ttft']} "
            f"| {lat['tpot'].mean:.2f} | {p99['tpot']} | {lat['itl'].mean:.2f} | {p99['itl']} "
            f"| {p99['e2el']} |"
        )
    return "\n".join(lines)


def render_markdown(result: VerificationResult) -> str:
    """The verification report as markdown: verdict, benchmarks, accuracy."""
    lines = [
        f"# Verification {'passed' if result.passed else 'FAILED'}",
        "",
        f"- endpoint: `{result.base_url}`",
        f"- model: `{result.model}`",
        f"- baseline: `{result.input.baseline or 'none'}`",
        "",
        "## Verdict",
        "",
        "| scope | metric | observed | expected | baseline | ratio | verdict |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for r in result.rows:
        verdict = {True: "PASS", False: "**FAIL**", None: ""}[r.passed]
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        baseline = format_value(r.baseline) if r.baseline is not None else ""
        lines.append(
            f"| {r.scope} | {r.metric} | {format_value(r.observed)} | {r.expected} "
            f"| {baseline} | {ratio} | {verdict} |"
        )
    if result.parity is not None:
        lines += ["", "## Output parity", "", render_parity_table(result.parity)]
    if result.stopped:
        lines += ["", f"Stopped: {result.stopped}"]
    if result.runs:
        lines += ["", "## Benchmarks", "", render_sweep_markdown(result.runs)]
    if result.accuracy is not None:
        lines += ["", "## Accuracy (GSM8K)", "", render_accuracy_table(result.accuracy)]
    return "\n".join(lines) + "\n"


def write_benchmark(
    runs: Sequence[BenchmarkRun], out_dir: Path, *, detailed: bool = False
) -> list[Path]:
    """One vLLM-compatible JSON per run, plus a markdown summary and plots for sweeps."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        written.append(
            _write_json(out_dir / f"bench-{run.scenario.name}.json", run.to_json(detailed=detailed))
        )
    if len(runs) > 1:
        summary = out_dir / "summary.md"
        summary.write_text("# Benchmark sweep\n\n" + render_sweep_markdown(runs) + "\n")
        written.append(summary)
        written += plot_sweep(runs, out_dir)
    return written


def write_accuracy(result: AccuracyResult, out_dir: Path) -> list[Path]:
    """``gsm8k.json`` (scores) and ``gsm8k-samples.jsonl`` (every response, as scored)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = out_dir / "gsm8k-samples.jsonl"
    with samples.open("w", encoding="utf-8") as f:
        for s in result.samples:
            f.write(
                json.dumps(
                    {
                        "doc_id": s.index,
                        "response": s.response,
                        "target": s.target,
                        "strict-match": s.strict,
                        "flexible-extract": s.flexible,
                        "exact_match,strict-match": float(s.strict_correct),
                        "exact_match,flexible-extract": float(s.flexible_correct),
                        "error": s.error or None,
                        "prompt": s.prompt,
                    }
                )
                + "\n"
            )
    return [_write_json(out_dir / "gsm8k.json", result.to_dict()), samples]


def write_verification(result: VerificationResult, out_dir: Path) -> list[Path]:
    """verification.json, verification.md, the per-run and accuracy files, and plots."""
    written = write_benchmark(result.runs, out_dir)
    if result.accuracy is not None:
        written += write_accuracy(result.accuracy, out_dir)
    written.append(_write_json(out_dir / "verification.json", result.to_dict()))
    report = out_dir / "verification.md"
    report.write_text(render_markdown(result))
    written.append(report)
    return written


def sweep_axis(runs: Sequence[BenchmarkRun]) -> str | None:
    """``max_concurrency`` or ``request_rate`` when the runs vary by it, else None."""
    for axis in ("max_concurrency", "request_rate"):
        values = {_axis_value(run, axis) for run in runs}
        if len(values) == len(runs) > 1:
            return axis
    return None


def plot_sweep(runs: Sequence[BenchmarkRun], out_dir: Path) -> list[Path]:
    """PNG plots of throughput, TTFT, TPOT/ITL and p99 latencies against the swept axis."""
    axis = sweep_axis(runs)
    if axis is None:
        return []
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ordered = sorted(
        (r for r in runs if math.isfinite(_axis_value(r, axis))),
        key=lambda r: _axis_value(r, axis),
    )
    if len(ordered) < 2:
        return []
    x = [_axis_value(r, axis) for r in ordered]
    label = "max concurrency" if axis == "max_concurrency" else "request rate (req/s)"
    m = [r.metrics for r in ordered]
    charts: list[tuple[str, str, str, dict[str, list[float]]]] = [
        (
            "throughput",
            "Token throughput",
            "tokens/s",
            {
                "output tok/s": [v.output_throughput for v in m],
                "total tok/s": [v.total_token_throughput for v in m],
            },
        ),
        (
            "ttft",
            "Time to first token",
            "TTFT (ms)",
            {
                "mean": [v.latency["ttft"].mean for v in m],
                "median": [v.latency["ttft"].median for v in m],
                "p99": [v.latency["ttft"].percentile(99.0) for v in m],
            },
        ),
        (
            "tpot_itl",
            "Time per output token and inter-token latency",
            "ms",
            {
                "mean TPOT": [v.latency["tpot"].mean for v in m],
                "p99 TPOT": [v.latency["tpot"].percentile(99.0) for v in m],
                "mean ITL": [v.latency["itl"].mean for v in m],
                "p99 ITL": [v.latency["itl"].percentile(99.0) for v in m],
            },
        ),
        (
            "latency_p99",
            "p99 latencies",
            "p99 latency (ms)",
            {
                k.upper(): [v.latency[k].percentile(99.0) for v in m]
                for k in ("ttft", "tpot", "itl", "e2el")
            },
        ),
    ]
    paths = []
    for name, title, ylabel, series in charts:
        figure = Figure(figsize=(7, 4.5), dpi=100)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        for legend, values in series.items():
            ax.plot(x, values, marker="o", label=legend)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} vs {label}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        figure.savefig(path)
        paths.append(path)
    return paths


def _axis_value(run: BenchmarkRun, axis: str) -> float:
    value = getattr(run.scenario, axis)
    return math.inf if value is None else float(value)


def _p99(run: BenchmarkRun, metric: str) -> str:
    try:
        return f"{run.metrics.latency[metric].percentile(99.0):.2f}"
    except KeyError:
        return "-"


def _rate(rate: float | None) -> str:
    return "inf" if rate is None or math.isinf(rate) else f"{rate:g}"


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path
