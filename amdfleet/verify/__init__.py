"""Verification: is a deployed endpoint ready? Benchmark, accuracy, thresholds, verdict.

Works against any OpenAI-compatible endpoint (vLLM, SGLang, TGI). The serving benchmark
measures what ``vllm bench serve`` measures, with its definitions and result keys; the
accuracy check scores GSM8K as lm-evaluation-harness does; the verdict compares both
with a stack's thresholds and, for context, with a catalog baseline.

Public API (what the Pulumi provider and the CLI use)::

    result = run_verification(spec, base_url=url, api_key=key, out_dir=Path("out"))
    if not result.passed:
        raise VerificationFailed(result.failures(), render_verdict_table(result))
"""

from __future__ import annotations

from amdfleet.verify.bench import BenchmarkRun
from amdfleet.verify.client import EndpointError
from amdfleet.verify.datasets import DatasetError
from amdfleet.verify.gsm8k import AccuracyResult, DatasetUnavailable
from amdfleet.verify.report import render_verdict_table
from amdfleet.verify.run import run_verification, verify_endpoint
from amdfleet.verify.verdict import VerdictRow, VerificationResult

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
