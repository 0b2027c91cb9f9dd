"""Numbers the seed recipes publish, kept as baselines with their source.

Metric names follow ``vllm bench serve --save-result`` JSON keys (``output_throughput``,
``p99_ttft_ms``, ...) and, for accuracy, ``gsm8k_flexible_extract`` /
``gsm8k_strict_match`` (lm-evaluation-harness filters). A verification report shows the
ratio of each observed metric to its baseline; baselines never decide pass/fail on
their own (thresholds do), because the seeds ran other software versions.

Hardware that is not AMD (seed 003 ran on 8x A100, seed 004 on H100) is recorded as it
was published, with ``hardware`` saying so: those numbers are context, not targets.

Seed 001 (vLLM vs TGI on 8x MI300X) publishes its results as charts only, throughput and
TTFT per batch size, context size and request rate in seed 001:110-166
("throughput_tgi_vllm.png"), and as prose such as seed 001:157 ("TGI begins to drop
requests once it reaches 5 RPS"), so it has no baselines here: there is no number to
compare with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from amdfleet.catalog.engines import SEED_000, SEED_002, SEED_003, SEED_004


@dataclass(frozen=True)
class Baseline:
    """One published measurement."""

    id: str
    source: str
    hardware: str
    engine: str
    model_id: str
    precision: str
    tp: int
    pp: int
    workload: str
    metrics: Mapping[str, float]
    note: str = ""


def _m(**values: float) -> Mapping[str, float]:
    return MappingProxyType(values)


_405B = "llama-3.1-405b-instruct"
_S000_NOTE = (
    "the seed does not say whether 'throughput' counts output or all tokens nor which "
    "prompt lengths it used; amdfleet compares it with output throughput and its p99 "
    "latency with p99 end-to-end latency"
)


def _seed000(concurrency: int, line: int, tok_s: float, p99_s: float) -> Baseline:
    return Baseline(
        id=f"seed000-mi325x-405b-fp8-c{concurrency}",
        source=f"{SEED_000}:{line},63",  # seed 000:63 ("100% Success Rate")
        hardware="8x MI325X",
        engine="vllm",
        model_id=_405B,
        precision="fp8",
        tp=8,
        pp=1,
        workload=f"concurrency {concurrency}, multi-run mean (n=5)",
        metrics=_m(output_throughput=tok_s, p99_e2el_ms=p99_s * 1000, success_rate=1.0),
        note=_S000_NOTE,
    )


def _seed002(
    precision: str, lines: str, bench: Mapping[str, float], gsm: tuple[float, ...]
) -> Baseline:
    flex, flex_err, strict, strict_err = gsm
    metrics = dict(bench)
    metrics.update(
        gsm8k_flexible_extract=flex,
        gsm8k_flexible_extract_stderr=flex_err,
        gsm8k_strict_match=strict,
        gsm8k_strict_match_stderr=strict_err,
    )
    return Baseline(
        id=f"seed002-mi355x-70b-{precision}-8k1k-c64",
        source=f"{SEED_002}:{lines}",
        hardware="1x MI355X",
        engine="vllm",
        model_id="llama-3.3-70b-instruct",
        precision=precision,
        tp=1,
        pp=1,
        workload="random 8192 in / 1024 out, 128 prompts, max concurrency 64, seed 123; "
        "GSM8K 5-shot via lm_eval local-completions",
        metrics=MappingProxyType(metrics),
    )


BASELINES: dict[str, Baseline] = {
    b.id: b
    for b in (
        _seed000(10, 51, 1090, 16.17),
        _seed000(50, 52, 4381, 20.14),
        _seed000(100, 53, 6802, 25.84),
        _seed000(200, 54, 6674, 26.33),
        _seed000(500, 55, 6804, 25.84),
        _seed002(
            "fp8",
            "268-298,213-214",
            _m(
                request_throughput=0.85,
                output_throughput=873.98,
                total_token_throughput=7864.95,
                max_output_tokens_per_s=1600.0,
                mean_ttft_ms=11639.66,
                median_ttft_ms=7543.86,
                p99_ttft_ms=31797.74,
                mean_tpot_ms=61.81,
                median_tpot_ms=66.91,
                p99_tpot_ms=72.17,
                mean_itl_ms=61.81,
                median_itl_ms=42.31,
                p99_itl_ms=1068.18,
                mean_e2el_ms=74875.13,
                median_e2el_ms=74736.83,
                p99_e2el_ms=101320.40,
            ),
            (0.9052, 0.0081, 0.8575, 0.0096),
        ),
        _seed002(
            "mxfp4",
            "301-331,223-224",
            _m(
                request_throughput=0.98,
                output_throughput=999.30,
                total_token_throughput=8992.71,
                max_output_tokens_per_s=1728.0,
                mean_ttft_ms=10128.30,
                median_ttft_ms=6526.57,
                p99_ttft_ms=26033.25,
                mean_tpot_ms=54.10,
                median_tpot_ms=57.28,
                p99_tpot_ms=62.95,
                mean_itl_ms=54.10,
                median_itl_ms=39.05,
                p99_itl_ms=411.51,
                mean_e2el_ms=65475.58,
                median_e2el_ms=65305.68,
                p99_e2el_ms=84989.10,
            ),
            (0.8954, 0.0084, 0.8317, 0.0103),
        ),
        Baseline(
            id="seed003-a100-70b-sglang-1k1k-c100",
            source=f"{SEED_003}:307-352",
            hardware="8x NVIDIA A100 (not AMD: context only)",
            engine="sglang",
            model_id="llama-3.1-70b-instruct",
            precision="bf16",
            tp=8,
            pp=1,
            workload="random 1000 in / 1000 out, 500 prompts, max concurrency 100",
            metrics=_m(
                request_throughput=3.80,
                output_throughput=1919.38,
                total_token_throughput=3817.25,
                mean_ttft_ms=245.98,
                median_ttft_ms=184.22,
                p99_ttft_ms=1251.67,
                mean_tpot_ms=47.19,
                p99_tpot_ms=56.37,
            ),
        ),
        Baseline(
            id="seed003-a100-70b-sglang-gsm8k",
            source=f"{SEED_003}:489-497",
            hardware="8x NVIDIA A100 (not AMD: context only)",
            engine="sglang",
            model_id="llama-3.1-70b-instruct",
            precision="bf16",
            tp=8,
            pp=1,
            workload="sglang.test.few_shot_gsm8k, 200 questions",
            metrics=_m(gsm8k_strict_match=0.830),
            note="SGLang's own GSM8K script, not lm-eval; closest to strict-match",
        ),
        Baseline(
            id="seed004-h100-405b-fp8",
            source=f"{SEED_004}:42",
            hardware="8x NVIDIA H100 (not AMD: context only)",
            engine="vllm",
            model_id=_405B,
            precision="fp8",
            tp=8,
            pp=1,
            workload="synthetic, average 1024 in / 128 out; GSM8K 8-shot chain-of-thought",
            metrics=_m(request_throughput=2.82, output_throughput=291.53),
            note="GSM8K 8-shot CoT 95.38% (±0.56) vs BF16 96.8%: a different task variant "
            "from the 5-shot gsm8k amdfleet scores, so not recorded as a metric",
        ),
    )
}


def baseline(baseline_id: str) -> Baseline:
    """The baseline with this id; raises ``KeyError`` if unknown."""
    return BASELINES[baseline_id]
