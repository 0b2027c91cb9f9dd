"""Campaign report: files, ratios, seed references and plots from measured results."""

from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from amdfleet.campaign.report import PLOTS, main, write_report
from amdfleet.campaign.report.axes import load_axis, log_plain_axis, readable_ticks
from amdfleet.campaign.results import CampaignResults, ResultsError
from amdfleet.catalog import baseline

FIXTURE = Path(__file__).parent / "campaign_report" / "results.json"
REAL = Path(__file__).parent / "campaign_report" / "local-campaign.json"


def _results() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def _point(results: dict[str, Any], label: str, load: float) -> dict[str, Any]:
    variant = next(v for v in results["variants"] if v["label"] == label)
    return next(p for p in variant["points"] if p["load"] == load)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _write(tmp_path: Path, results: dict[str, Any]) -> tuple[list[Path], Path]:
    src = tmp_path / "results.json"
    src.write_text(json.dumps(results))
    out = tmp_path / "report"
    return write_report(src, out), out


def test_writes_every_file_and_valid_pngs(tmp_path: Path) -> None:
    written, out = _write(tmp_path, _results())
    names = {p.name for p in written}
    assert names == {"report.md", "report.json", "report.html", *PLOTS}
    for name in PLOTS:
        width, height = _png_size(out / name)
        assert 500 <= width <= 1600 and 400 <= height <= 700, (name, width, height)
        assert (out / name).stat().st_size > 10_000


def test_sweep_table_ratios_to_the_baseline_variant(tmp_path: Path) -> None:
    results = _results()
    _, out = _write(tmp_path, results)
    md = (out / "report.md").read_text()
    for load in (1, 2, 4, 10):
        fast = _point(results, "fast", load)["output_throughput"]
        slow = _point(results, "slow", load)["output_throughput"]
        row = next(line for line in md.splitlines() if re.match(rf"\|\s+{load} \|", line))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{fast:.2f}" and cells[2] == "1.00×"
        assert cells[6] == f"{slow:.2f}" and cells[7] == f"{slow / fast:.2f}×"
    # the request-rate sweep has no baseline variant in it: no ratio, failures shown
    assert "| 5 (HTTP 500: 5) |" in md
    assert "tgi ×fast" not in md


def test_seed_references_with_source_and_ratio(tmp_path: Path) -> None:
    results = _results()
    _, out = _write(tmp_path, results)
    md = (out / "report.md").read_text()
    observed = _point(results, "fast", 10)["output_throughput"]
    row = next(
        line for line in md.splitlines() if "fp8-c10" in line and "output_throughput" in line
    )
    assert baseline("seed000-mi325x-405b-fp8-c10").source in row and "| fast " in row
    assert f"{observed:.2f}" in row and f"{observed / 1090:.2f}×" in row
    assert baseline("seed002-mi355x-70b-fp8-8k1k-c64").source in md  # it matches `slow`
    assert "Seed 001 publishes no numbers" in md
    # accuracy with stderr and the seed's published GSM8K line
    slow_acc = next(v for v in results["variants"] if v["label"] == "slow")["accuracy"]
    acc_row = next(
        line for line in md.splitlines() if line.startswith("| slow ") and "0.9052" in line
    )
    assert f"{slow_acc['flexible_extract']:.4f}" in acc_row
    assert f"{slow_acc['flexible_extract_stderr']:.4f}" in acc_row
    # the broken variant (no points) gets no seed rows, but is in the reproducibility table
    assert not any("| broken " in line and "seed000" in line for line in md.splitlines())
    assert "failed: up failed: engine did not become ready" in md


def test_html_embeds_every_png_and_links_nothing_outside(tmp_path: Path) -> None:
    _, out = _write(tmp_path, _results())
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert not re.search(r"""(src|href)=["']?https?://""", page)
    assert "rocm/vllm:rocm6.4.1_vllm_0.9.1_20250715" in page and "10.0.0.10" in page


def test_report_json_round_trips(tmp_path: Path) -> None:
    results = _results()
    _, out = _write(tmp_path, results)
    data = json.loads((out / "report.json").read_text())
    assert json.loads(json.dumps(data)) == data
    rows = {(r["variant"], r["load"]): r for r in data["sweeps"][0]["rows"]}
    fast, slow = _point(results, "fast", 4), _point(results, "slow", 4)
    assert rows[("slow", 4)]["ratio_to_baseline"] == pytest.approx(
        slow["output_throughput"] / fast["output_throughput"]
    )
    assert rows[("fast", 4)]["output_tok_s_per_gpu"] == pytest.approx(fast["output_throughput"] / 8)
    assert rows[("slow", 4)]["tok_s_per_user"] == pytest.approx(1000 / slow["median_tpot_ms"])
    assert data["plots"]["frontier.png"] == "frontier.png" and data["skipped_plots"] == {}


def test_plots_without_data_are_skipped_with_a_note(tmp_path: Path) -> None:
    results = copy.deepcopy(_results())
    results["variants"] = [v for v in results["variants"] if v["label"] != "tgi"]
    for v in results["variants"]:
        v["accuracy"] = None
    written, out = _write(tmp_path, results)
    names = {p.name for p in written}
    assert "request_rate.png" not in names and "accuracy.png" not in names
    assert "throughput_vs_concurrency.png" in names
    md = (out / "report.md").read_text()
    assert "`request_rate.png` skipped: the campaign has no request-rate sweep" in md
    assert "`accuracy.png` skipped: no variant has an accuracy result" in md
    assert "<code>request_rate.png</code> skipped" in (out / "report.html").read_text()


def test_bad_results_name_the_problem(tmp_path: Path) -> None:
    results = _results()
    results["baseline"] = "nope"
    src = tmp_path / "results.json"
    src.write_text(json.dumps(results))
    with pytest.raises(ResultsError, match="baseline 'nope' is not a variant; valid: fast, slow"):
        write_report(src, tmp_path / "out")
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "out")]) == 1
    assert main([]) == 2


def test_reproducibility_names_the_digest_that_ran_and_where_it_came_from(
    tmp_path: Path,
) -> None:
    """A variant whose stack pinned a moving tag: the engine output's ``image`` (the
    digest reference every node ran) and ``image_source`` (the tag) reach the report."""
    results = _results()
    variant = results["variants"][0]
    ref = f"rocm/vllm-dev@sha256:{'4e' * 32}"
    variant.update(image=ref, image_source="rocm/vllm-dev:nightly", image_digests=[ref, ref])
    _, out = _write(tmp_path, results)

    data = json.loads((out / "report.json").read_text())
    variants = data["reproducibility"]["variants"]
    reproduced = next(v for v in variants if v["label"] == variant["label"])
    assert (reproduced["image"], reproduced["image_source"]) == (ref, "rocm/vllm-dev:nightly")
    row = next(line for line in (out / "report.md").read_text().splitlines() if ref in line)
    assert "rocm/vllm-dev:nightly" in row and row.count(ref) == 3  # image + both nodes


def _drawn_labels(axis: Any) -> list[Any]:
    """The tick labels matplotlib draws on ``axis``: ticks in view, with a text."""
    low, high = sorted(axis.get_view_interval())
    along = 0 if axis.axis_name == "x" else 1
    return [
        t
        for t in axis.get_ticklabels(which="both")
        if t.get_visible() and t.get_text() and low <= t.get_position()[along] <= high
    ]


@pytest.mark.parametrize(
    ("width", "xs", "ys", "x_labels"),
    [
        # x over 1.5 decades in a half-width panel
        (6.5, [20.0, 630.0], [300.0, 800.0], [20, 30, 50, 70, 100, 200, 300, 500, 700]),
        # the frontier's x in the fixture
        (
            9.0,
            [10.0, 1500.0],
            [300.0, 800.0],
            [8, 10, 20, 30, 50, 70, 100, 200, 300, 500, 700, 1000],
        ),
        # under a decade everything fits but 900; y: the TTFT axis with seed 002's p99
        (9.0, [300.0, 1500.0], [0.5, 70000.0], [300, 400, 500, 600, 700, 800, 1000]),
    ],
)
def test_log_axes_label_only_ticks_that_can_be_read(
    width: float, xs: list[float], ys: list[float], x_labels: list[int]
) -> None:
    """Every label drawn on a plain-number log axis keeps clear of its neighbours (each
    of these axes used to print every minor tick: ``5006007008009001000``), the round
    ones are there, and they are plain numbers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot(xs, ys, "o-")
    log_plain_axis(ax, "x")
    log_plain_axis(ax, "y")
    FigureCanvasAgg(fig).draw()
    for axis in (ax.xaxis, ax.yaxis):
        labels = _drawn_labels(axis)
        boxes = [t.get_window_extent() for t in labels]
        assert len(labels) >= 2
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), [t.get_text() for t in labels]
        assert all(re.fullmatch(r"[0-9.]+", t.get_text()) for t in labels)
    drawn = sorted(float(t.get_text()) for t in _drawn_labels(ax.xaxis))
    assert drawn == x_labels


def test_readable_ticks_prefers_round_numbers() -> None:
    ticks = [300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 1000.0]
    shown = readable_ticks(ticks, lambda v: v / 5, lambda label: 30.0, lambda v: f"{v:g}")
    assert shown == {1000.0, 500.0, 300.0, 700.0}


def test_a_real_campaigns_results_round_trip_through_the_typed_records(tmp_path: Path) -> None:
    """What the runner wrote reads back into the typed records and writes out the same
    bytes, and its report draws every plot it has data for."""
    text = REAL.read_text()
    results = CampaignResults.from_json(json.loads(text))
    assert json.dumps(results.to_json(), indent=2, default=str) + "\n" == text
    assert [v.label for v in results.variants] == ["seqs4", "seqs16"]
    point = results.variants[0].points[1]
    assert (point.name, point.load, point.failed) == ("conc", 8.0, 0)
    assert point.metric("median_tpot_ms") == point.metrics["median_tpot_ms"]
    written = write_report(REAL, tmp_path / "report")
    assert {p.name for p in written} == {
        "report.md",
        "report.json",
        "report.html",
        *(p for p in PLOTS if p != "request_rate.png"),
    }


def test_the_load_axis_labels_the_loads_drawn_that_can_be_read() -> None:
    """Ticked at every load drawn (measured and seed); a seed's 64 beside its 50 keeps its
    tick but not a label that would touch 50's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot([1, 2, 4, 10], [1, 2, 3, 4], "o-")
    ax.plot([50, 64, 100, 200, 500], [5, 6, 7, 8, 9], "*")
    load_axis(ax, "concurrency")
    FigureCanvasAgg(fig).draw()
    assert list(ax.get_xticks()) == [1, 2, 4, 10, 50, 64, 100, 200, 500]
    labels = _drawn_labels(ax.xaxis)
    assert [t.get_text() for t in labels] == ["1", "2", "4", "10", "50", "100", "200", "500"]
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
