"""Verification: is a deployed endpoint ready? Benchmark, accuracy, thresholds, verdict.

Works against any OpenAI-compatible endpoint (vLLM, SGLang, TGI). The serving benchmark
measures what ``vllm bench serve`` measures, with its definitions and result keys; the
accuracy check scores GSM8K as lm-evaluation-harness does; the verdict compares both
with a stack's thresholds and, for context, with a catalog baseline.

Its inputs are the plan's records (:class:`~amdfleet.plan.models.VerificationInput` and
its parts), never the stack's config types. Public API (what the Pulumi provider and the
CLI use)::

    checks = plan.verification.input
    result = run_verification(checks, base_url=url, api_key=key, out_dir=Path("out"))
    if not result.passed:
        raise VerificationFailed(result.failures(), render_verdict_table(result))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amdfleet.verify.bench import BenchmarkRun
    from amdfleet.verify.client import EndpointError
    from amdfleet.verify.datasets import DatasetError
    from amdfleet.verify.gsm8k import AccuracyResult, DatasetUnavailable
    from amdfleet.verify.report import render_verdict_table
    from amdfleet.verify.run import run_verification, verify_endpoint
    from amdfleet.verify.verdict import VerdictRow, VerificationResult

PARITY_PHASE = "output parity"
"""The label a run's progress hears for the parity phase (no scenario name has a space)."""

# Imported on first access, so that importing one submodule (the CLI's option
# parsing, the verdict table) does not import httpx and the whole benchmark client.
_EXPORTS = {
    "AccuracyResult": "gsm8k",
    "BenchmarkRun": "bench",
    "DatasetError": "datasets",
    "DatasetUnavailable": "gsm8k",
    "EndpointError": "client",
    "VerdictRow": "verdict",
    "VerificationResult": "verdict",
    "render_verdict_table": "report",
    "run_verification": "run",
    "verify_endpoint": "run",
}

__all__ = [
    "AccuracyResult",
    "BenchmarkRun",
    "DatasetError",
    "DatasetUnavailable",
    "EndpointError",
    "VerdictRow",
    "VerificationResult",
    "render_verdict_table",
    "run_verification",
    "verify_endpoint",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
