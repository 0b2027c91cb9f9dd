"""A campaign's report: markdown, JSON, a self-contained HTML page and PNG plots.

Input is only the campaign's ``results.json`` (the runner's contract, typed in
:mod:`amdfleet.campaign.results`: a list of variants, each with its stack, inventory,
image digests, sweep points under ``vllm bench serve`` key names and an optional GSM8K
result) plus the seeds' published numbers in :mod:`amdfleet.catalog.baselines`.
:mod:`.data` shapes the rows (what ``report.json`` holds), :mod:`.plots` draws the PNGs
on the axes of :mod:`.axes`, and :mod:`.render` writes the markdown and HTML.

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

import json
import sys
from collections.abc import Iterable
from pathlib import Path

from amdfleet.campaign.report.data import Report, report_data
from amdfleet.campaign.report.plots import PLOTS, draw_plots
from amdfleet.campaign.report.render import build_tables, render_html, render_markdown
from amdfleet.campaign.results import ResultsError, load_results

__all__ = ["PLOTS", "main", "write_report"]


def write_report(results_path: Path, out_dir: Path) -> list[Path]:
    """Render ``results_path`` into ``out_dir``; returns the files written.

    Writes ``report.md``, ``report.json``, ``report.html`` and one PNG per plot that
    has data. Raises :class:`~amdfleet.campaign.results.ResultsError` when the file is
    not a campaign's results.
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


def main(argv: Iterable[str]) -> int:
    """``python -m amdfleet.campaign.report RESULTS.json OUT_DIR``."""
    args = list(argv)
    if len(args) != 2:
        print("usage: python -m amdfleet.campaign.report RESULTS.json OUT_DIR", file=sys.stderr)
        return 2
    try:
        written = write_report(Path(args[0]), Path(args[1]))
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
