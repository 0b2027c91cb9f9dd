"""Thresholds and baselines → verdict rows, failures, the JSON result and the reports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from amdfleet.catalog.baselines import BASELINES
from amdfleet.config import BenchmarkScenario, Thresholds, VerificationSpec
from amdfleet.errors import ConfigError
from amdfleet.findings import Finding
from amdfleet.plan.models import VerificationInput
from amdfleet.plan.verification import scenario_input, verification_input
from amdfleet.verify.bench import BenchmarkRun
from amdfleet.verify.client import RequestOutput
from amdfleet.verify.gsm8k import AccuracyResult, score_response
from amdfleet.verify.metrics import compute_metrics
from amdfleet.verify.report import (
    render_accuracy_table,
    render_benchmark_table,
    render_verdict_table,
    write_benchmark,
    write_verification,
)
from amdfleet.verify.run import run_verification
from amdfleet.verify.verdict import VerificationResult, judge

BASELINE = "seed002-mi355x-70b-fp8-8k1k-c64"


def _checks(**section: Any) -> VerificationInput:
    """A verification section (config defaults filled in) as the plan hands it on."""
    return verification_input(VerificationSpec(**section), None)


def _run(name: str, concurrency: int, ok: int, failed: int = 0) -> BenchmarkRun:
    outputs = [
        RequestOutput(
            success=True,
            start_time=0.0,
            token_times=[0.1 * (i + 1), 0.1 * (i + 1) + 0.05],
            output_tokens=11,
            prompt_len=100,
        )
        for i in range(ok)
    ] + [RequestOutput(error="HTTP 500: boom") for _ in range(failed)]
    scenario = scenario_input(
        BenchmarkScenario(name=name, max_concurrency=concurrency, num_prompts=ok + failed)
    )
    return BenchmarkRun(
        scenario=scenario,
        model="m",
        tokenizer=None,
        date="20260101-000000",
        outputs=tuple(outputs),
        metrics=compute_metrics(outputs, duration=2.0),
    )


def _accuracy() -> AccuracyResult:
    samples = (
        score_response(0, "p", "#### 5", "#### 5"),
        score_response(1, "p", "so 6.", "#### 6"),
        score_response(2, "p", "", "#### 7", error="HTTP 500: boom"),
    )
    return AccuracyResult(num_fewshot=5, samples=samples)


def _result(
    spec: VerificationInput, runs: list[BenchmarkRun], accuracy: AccuracyResult | None
) -> VerificationResult:
    return VerificationResult(
        input=spec,
        model="m",
        base_url="http://h",
        runs=tuple(runs),
        accuracy=accuracy,
        rows=judge(spec, runs, accuracy),
    )


def test_passing_thresholds_and_baseline_ratios() -> None:
    spec = _checks(
        thresholds=Thresholds(min_output_throughput=10, max_p99_ttft_ms=1000, max_p99_tpot_ms=10),
        baseline=BASELINE,
    )
    result = _result(spec, [_run("c4", 4, ok=4)], None)
    rows = {r.metric: r for r in result.rows}
    assert result.passed and result.failures() == []
    assert rows["output_throughput"].observed == pytest.approx(22.0)
    assert rows["output_throughput"].passed is True
    assert rows["output_throughput"].ratio == pytest.approx(22.0 / 873.98)
    # metrics the baseline has but no threshold judges are shown with their ratio
    assert rows["mean_ttft_ms"].passed is None
    assert rows["mean_ttft_ms"].baseline == BASELINES[BASELINE].metrics["mean_ttft_ms"]


def test_failures_name_metric_expected_and_observed() -> None:
    spec = _checks(
        thresholds=Thresholds(min_success_rate=0.9, max_p99_ttft_ms=100, min_flexible_accuracy=0.9)
    )
    result = _result(spec, [_run("c8", 8, ok=3, failed=1)], _accuracy())
    assert not result.passed
    failures = {f.subject: (f.expected, f.observed) for f in result.failures()}
    assert failures["c8/success_rate"] == (">= 0.9", "0.75")
    assert failures["c8/p99_ttft_ms"][0] == "<= 100"
    assert failures["gsm8k/gsm8k_flexible_extract"] == (">= 0.9", "0.6667")
    assert failures["gsm8k/success_rate"] == (">= 0.9", "0.6667")


def test_a_sweep_judges_each_scenario_against_its_own_threshold_and_baseline() -> None:
    """Seed 000's concurrency table: each level has its own minimum and baseline."""
    low = _run("c10", 4, ok=4)
    low = dataclasses.replace(
        low,
        scenario=low.scenario.model_copy(
            update={"baseline": "seed000-mi325x-405b-fp8-c10", "min_output_throughput": 20}
        ),
    )
    high = _run("c50", 4, ok=4)
    high = dataclasses.replace(
        high,
        scenario=high.scenario.model_copy(
            update={"baseline": "seed000-mi325x-405b-fp8-c50", "min_output_throughput": 40}
        ),
    )
    spec = _checks(thresholds=Thresholds(min_output_throughput=1), baseline=BASELINE)
    result = _result(spec, [low, high], None)
    rows = {(r.scope, r.metric): r for r in result.rows}
    assert rows[("c10", "output_throughput")].expected == ">= 20"
    assert rows[("c10", "output_throughput")].passed is True  # 22 tok/s
    assert rows[("c50", "output_throughput")].expected == ">= 40"
    assert rows[("c50", "output_throughput")].passed is False
    assert rows[("c10", "output_throughput")].baseline == 1090
    assert rows[("c50", "output_throughput")].baseline == 4381
    assert ("c10", "mean_ttft_ms") not in rows  # the seed-000 baselines publish no TTFT


def test_an_empty_run_cannot_pass_latency_thresholds() -> None:
    spec = _checks(thresholds=Thresholds(min_success_rate=0.01, max_p99_ttft_ms=100))
    result = _result(spec, [_run("down", 4, ok=0, failed=3)], None)
    row = next(r for r in result.rows if r.metric == "p99_ttft_ms")
    assert row.observed is None and row.passed is False


def test_unknown_baseline_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known baselines: seed000"):
        judge(_checks(baseline="nope"), [], None)


def test_disabled_spec_passes_without_contacting_anything() -> None:
    result = run_verification(_checks(enabled=False), base_url="http://127.0.0.1:9")
    assert result.passed and result.rows == ()


def test_credentials_in_the_url_are_not_written() -> None:
    spec = _checks()
    result = VerificationResult(input=spec, model="m", base_url="http://u:secret@h:8000/v1")
    assert result.to_dict()["base_url"] == "http://h:8000/v1"


def test_interrupted_run_never_passes() -> None:
    spec = _checks()
    result = VerificationResult(input=spec, model="m", base_url="u", interrupted=True)
    assert (
        not result.passed
        and Finding.threshold("run", "complete", "interrupted") in result.failures()
    )


def test_json_and_reports(tmp_path: Path) -> None:
    thresholds = Thresholds(min_success_rate=0.5, min_strict_accuracy=0.1)
    spec = _checks(baseline=BASELINE, thresholds=thresholds)
    result = _result(spec, [_run("c8", 8, ok=8)], _accuracy())
    written = {p.name for p in write_verification(result, tmp_path)}
    assert written == {
        "verification.json",
        "verification.md",
        "bench-c8.json",
        "gsm8k.json",
        "gsm8k-samples.jsonl",
    }
    data = json.loads((tmp_path / "verification.json").read_text())
    assert data["passed"] is True and data["baseline"] == BASELINE
    assert data["accuracy"]["exact_match,strict-match"] == pytest.approx(1 / 3)
    assert set(data["benchmarks"]) == {"c8"}
    assert "api_key" not in json.dumps(data).lower()
    markdown = (tmp_path / "verification.md").read_text()
    assert markdown.startswith("# Verification passed") and "| c8 | 8 |" in markdown
    samples = (tmp_path / "gsm8k-samples.jsonl").read_text().splitlines()
    assert json.loads(samples[2])["error"] == "HTTP 500: boom"


def test_a_sweep_gets_a_summary_and_plots(tmp_path: Path) -> None:
    runs = [_run("c4", 4, ok=4), _run("c8", 8, ok=8), _run("c16", 16, ok=8)]
    written = {p.name for p in write_benchmark(runs, tmp_path)}
    pngs = {"throughput.png", "ttft.png", "tpot_itl.png", "latency_p99.png"}
    assert written == {"bench-c4.json", "bench-c8.json", "bench-c16.json", "summary.md"} | pngs
    for png in pngs:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in summary[4:]] == ["| c4", "| c8", "| c16"]


def test_benchmark_table_is_laid_out_like_vllms() -> None:
    table = render_benchmark_table(_run("c4", 4, ok=4, failed=1)).splitlines()
    assert table[0] == "============ Serving Benchmark Result ============"
    assert table[1] == f"{'Successful requests:':<40} {4:<10}"
    assert f"{'Maximum request concurrency:':<40} {4:<10}" in table
    assert "---------------Time to First Token----------------" in table
    assert any(line.startswith("P99 ITL (ms):") for line in table)
    reasons = table.index("Failed requests by reason:")
    assert table[reasons + 1] == "  1  HTTP 500"


def test_accuracy_table_has_lm_evals_columns() -> None:
    lines = render_accuracy_table(_accuracy()).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"]
    assert cells[2] == [
        "gsm8k",
        "3",
        "flexible-extract",
        "5",
        "exact_match",
        "↑",
        "0.6667",
        "±",
        "0.3333",
    ]
    assert cells[3] == ["", "", "strict-match", "5", "exact_match", "↑", "0.3333", "±", "0.3333"]
    # Numbers right-aligned, as lm_eval marks them.
    assert "".join("r" if c.endswith(":") else "l" for c in cells[1]) == "lrlrllrlr"
    assert len({len(line) for line in lines[:4]}) == 1


def test_verdict_table_marks_pass_and_fail() -> None:
    spec = _checks(thresholds=Thresholds(min_success_rate=1.0))
    table = render_verdict_table(_result(spec, [_run("c8", 8, ok=3, failed=1)], None))
    assert table.endswith("verification FAILED")
    lines = table.splitlines()
    assert lines[0].split() == [
        "scope", "metric", "observed", "expected", "baseline", "ratio", "verdict"
    ]  # fmt: skip
    assert set(lines[1]) == {"-", " "} and len(lines[1].split()) == 7
    [row] = [line for line in table.splitlines() if "success_rate" in line]
    words = row.replace("|", " ").split()
    # 3 of 4 requests succeeded: 0.75 against ">= 1"
    assert words[:3] == ["c8", "success_rate", "0.75"] and ">= 1" in row
    assert words[-1] == "FAIL"
    lenient = _checks(thresholds=Thresholds(min_success_rate=0.75))
    table = render_verdict_table(_result(lenient, [_run("c8", 8, ok=3, failed=1)], None))
    [row] = [line for line in table.splitlines() if "success_rate" in line]
    assert row.split()[-1] == "PASS" and table.endswith("verification PASSED")
