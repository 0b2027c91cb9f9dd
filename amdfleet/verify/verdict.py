"""Thresholds and baselines → a verdict: each metric observed vs expected, pass/fail.

Pure code over finished runs. Thresholds decide; a catalog baseline (a seed's
published numbers) only adds the ratio observed/baseline next to each metric it also
has, because the seeds ran other hardware and software versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from amdfleet.catalog.baselines import BASELINES, Baseline
from amdfleet.errors import ConfigError
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.models import ThresholdsInput, VerificationInput
from amdfleet.verify.bench import BenchmarkRun
from amdfleet.verify.gsm8k import AccuracyResult
from amdfleet.verify.parity import ParityResult

ACCURACY_SCOPE = "gsm8k"
PARITY_SCOPE = "parity"


@dataclass(frozen=True)
class VerdictRow:
    """One metric: what was observed, what the threshold expects, the baseline ratio.

    ``passed`` is None for a metric shown only for its baseline ratio.
    """

    scope: str
    metric: str
    observed: float | None
    expected: str = ""
    passed: bool | None = None
    baseline: float | None = None

    @property
    def ratio(self) -> float | None:
        """observed / baseline, when both exist and the baseline is not zero."""
        if self.observed is None or not self.baseline:
            return None
        return self.observed / self.baseline

    @property
    def name(self) -> str:
        """``scope/metric`` (how failures are reported)."""
        return f"{self.scope}/{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "scope": self.scope,
            "metric": self.metric,
            "observed": self.observed,
            "expected": self.expected or None,
            "passed": self.passed,
            "baseline": self.baseline,
            "ratio": self.ratio,
        }


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of a stack's verification against an endpoint."""

    input: VerificationInput
    """What was run and judged."""
    model: str
    base_url: str
    runs: tuple[BenchmarkRun, ...] = ()
    accuracy: AccuracyResult | None = None
    rows: tuple[VerdictRow, ...] = field(default_factory=tuple)
    interrupted: bool = False
    parity: ParityResult | None = None
    stopped: str = ""
    """Why the checks after output parity did not run (empty when they did)."""

    @property
    def passed(self) -> bool:
        """True when every threshold row passed and the run was not interrupted."""
        return not self.interrupted and all(r.passed is not False for r in self.rows)

    def failures(self) -> list[Finding]:
        """A :meth:`Finding.threshold` for each failed threshold, for VerificationFailed."""
        failed = [
            Finding.threshold(r.name, r.expected, format_value(r.observed))
            for r in self.rows
            if r.passed is False
        ]
        if self.interrupted:
            failed.append(Finding.threshold("run", "complete", "interrupted"))
        return failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: metrics, thresholds, verdict rows and baseline ratios (no secrets)."""
        return {
            "passed": self.passed,
            "interrupted": self.interrupted,
            "base_url": _without_credentials(self.base_url),
            "model": self.model,
            "baseline": self.input.baseline,
            "thresholds": self.input.thresholds.model_dump(),
            "verdict": [r.to_dict() for r in self.rows],
            "benchmarks": {run.scenario.name: run.to_json() for run in self.runs},
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "parity": self.parity.to_dict() if self.parity else None,
            "stopped": self.stopped or None,
        }


def judge(
    spec: VerificationInput,
    runs: Sequence[BenchmarkRun],
    accuracy: AccuracyResult | None,
    parity: ParityResult | None = None,
) -> tuple[VerdictRow, ...]:
    """Verdict rows for output parity, every scenario and the accuracy check.

    Raises :class:`ConfigError` if ``spec.baseline`` is not a catalog baseline id.
    """
    reference = resolve_baseline(spec.baseline)
    metrics = reference.metrics if reference else {}
    rows: list[VerdictRow] = []
    if parity is not None and spec.parity is not None:
        rows.append(_at_least(PARITY_SCOPE, "match_share", parity.share, spec.parity.min_match, {}))
    for run in runs:
        rows += _benchmark_rows(
            run, _scenario_thresholds(spec, run), _scenario_baseline(run, metrics)
        )
    if accuracy is not None:
        rows += _accuracy_rows(accuracy, spec.thresholds, metrics)
    return tuple(rows)


def _scenario_thresholds(spec: VerificationInput, run: BenchmarkRun) -> ThresholdsInput:
    """The stack's thresholds, with the scenario's own minimum throughput if it sets one
    (a sweep needs one per load level)."""
    own = run.scenario.min_output_throughput
    if own is None:
        return spec.thresholds
    return spec.thresholds.model_copy(update={"min_output_throughput": own})


def _scenario_baseline(run: BenchmarkRun, default: Mapping[str, float]) -> Mapping[str, float]:
    """The scenario's own catalog baseline if it names one, else the stack's."""
    own = resolve_baseline(run.scenario.baseline, f"verification.scenarios.{run.scenario.name}")
    return own.metrics if own else default


def resolve_baseline(
    baseline_id: str | None, field: str = "verification.baseline"
) -> Baseline | None:
    """The catalog baseline, or a :class:`ConfigError` listing the known ids."""
    if baseline_id is None:
        return None
    if baseline_id not in BASELINES:
        raise ConfigError(
            [
                config_issue(
                    field,
                    f"unknown baseline {baseline_id!r}",
                    f"known baselines: {', '.join(sorted(BASELINES))}",
                )
            ]
        )
    return BASELINES[baseline_id]


def format_value(value: float | None) -> str:
    """A number as the verdict table shows it."""
    if value is None:
        return "n/a"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.2f}" if value != int(value) else f"{int(value)}"
    return f"{value:.4g}"


def _benchmark_rows(
    run: BenchmarkRun, t: ThresholdsInput, baseline: Mapping[str, float]
) -> list[VerdictRow]:
    scope = run.scenario.name
    observed = run.metrics.to_dict()
    if not run.metrics.completed:
        # vLLM reports latencies of zero when nothing completed: show them as missing
        # so a latency threshold cannot pass on an empty run.
        observed = {k: None if k.endswith("_ms") else v for k, v in observed.items()}
    observed["success_rate"] = run.metrics.success_rate
    rows = [
        _at_least(scope, "success_rate", observed["success_rate"], t.min_success_rate, baseline)
    ]
    limits = (
        ("output_throughput", t.min_output_throughput, True),
        ("p99_ttft_ms", t.max_p99_ttft_ms, False),
        ("p99_tpot_ms", t.max_p99_tpot_ms, False),
    )
    for metric, limit, at_least in limits:
        value = observed.get(metric)
        if limit is None:
            continue
        rows.append(
            _at_least(scope, metric, value, limit, baseline)
            if at_least
            else _at_most(scope, metric, value, limit, baseline)
        )
    judged = {r.metric for r in rows}
    for metric, reference in baseline.items():
        if metric in observed and metric not in judged and not metric.startswith("gsm8k"):
            value = observed[metric]
            rows.append(VerdictRow(scope, metric, _number(value), baseline=reference))
    return rows


def _accuracy_rows(
    result: AccuracyResult, t: ThresholdsInput, baseline: Mapping[str, float]
) -> list[VerdictRow]:
    sent = len(result.samples)
    success = (sent - result.failed) / sent if sent else 0.0
    scores = (
        ("gsm8k_flexible_extract", result.flexible_extract, t.min_flexible_accuracy),
        ("gsm8k_strict_match", result.strict_match, t.min_strict_accuracy),
    )
    rows = [_at_least(ACCURACY_SCOPE, "success_rate", success, t.min_success_rate, {})]
    for metric, score, limit in scores:
        if limit is None:
            rows.append(
                VerdictRow(ACCURACY_SCOPE, metric, score.value, baseline=baseline.get(metric))
            )
        else:
            rows.append(_at_least(ACCURACY_SCOPE, metric, score.value, limit, baseline))
        rows.append(
            VerdictRow(
                ACCURACY_SCOPE,
                f"{metric}_stderr",
                score.stderr,
                baseline=baseline.get(f"{metric}_stderr"),
            )
        )
    return rows


def _at_least(
    scope: str, metric: str, value: Any, limit: float, baseline: Mapping[str, float]
) -> VerdictRow:
    observed = _number(value)
    return VerdictRow(
        scope,
        metric,
        observed,
        expected=f">= {format_value(limit)}",
        passed=observed is not None and observed >= limit,
        baseline=baseline.get(metric),
    )


def _at_most(
    scope: str, metric: str, value: Any, limit: float, baseline: Mapping[str, float]
) -> VerdictRow:
    observed = _number(value)
    return VerdictRow(
        scope,
        metric,
        observed,
        expected=f"<= {format_value(limit)}",
        passed=observed is not None and observed <= limit,
        baseline=baseline.get(metric),
    )


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
