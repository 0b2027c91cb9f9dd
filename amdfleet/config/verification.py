"""The ``verification`` section: the benchmark scenarios, accuracy and parity checks, and
the thresholds that gate a deployment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from amdfleet.config.base import NAME_RE, SpecModel


class BenchmarkScenario(SpecModel):
    """One serving-benchmark run, like one `vllm bench serve` invocation."""

    name: str = Field(pattern=NAME_RE, description="Scenario label in reports.")
    dataset: Literal["random", "sharegpt", "prompts"] = Field(
        "random",
        description="'random' prompts of exact token lengths, a ShareGPT json file, or a "
        "file of fixed prompts (one per line).",
    )
    dataset_path: str | None = Field(
        None, description="Path to the ShareGPT or prompts file (required for those)."
    )
    input_len: int = Field(1024, ge=1, description="Prompt tokens (random dataset).")
    output_len: int = Field(128, ge=1, description="Generated tokens per request.")
    range_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Length spread: lengths uniform in len×(1±ratio)."
    )
    num_prompts: int = Field(100, ge=1, description="Requests to send.")
    max_concurrency: int | None = Field(
        None, ge=1, description="Cap on in-flight requests (None = no cap)."
    )
    request_rate: float | None = Field(
        None, gt=0, description="Arrival rate, requests/s (None = all at once)."
    )
    burstiness: float = Field(
        1.0, gt=0, description="Gamma shape for arrivals; 1.0 is a Poisson process."
    )
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="/v1/completions or /v1/chat/completions."
    )
    ignore_eos: bool = Field(True, description="Generate exactly output_len tokens.")
    seed: int = Field(0, description="Seed for prompts and arrivals.")
    baseline: str | None = Field(
        None,
        description="Catalog baseline for this scenario (overrides verification.baseline).",
    )
    min_output_throughput: float | None = Field(
        None,
        gt=0,
        description="Minimum output tokens/s for this scenario (overrides the stack-wide "
        "threshold; sweeps need one per load level).",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> BenchmarkScenario:
        if self.dataset != "random" and not self.dataset_path:
            raise ValueError(
                f"dataset '{self.dataset}' needs dataset_path — set it to the "
                f"{self.dataset} file, or use dataset: random"
            )
        return self


class AccuracySpec(SpecModel):
    """An accuracy check, scored as lm-evaluation-harness scores it."""

    task: Literal["gsm8k"] = Field("gsm8k", description="Task (GSM8K, 5-shot).")
    num_fewshot: int = Field(5, ge=0, le=8, description="Few-shot examples per prompt.")
    limit: int | None = Field(
        None, ge=1, description="Score only the first N test problems (quick checks)."
    )
    data_path: str | None = Field(
        None,
        description="Directory with GSM8K test.jsonl/train.jsonl; downloaded from the "
        "public source when unset and online.",
    )
    concurrency: int = Field(32, ge=1, description="Requests in flight while scoring.")
    max_tokens: int = Field(256, ge=1, description="Generation budget per problem.")


class ParitySpec(SpecModel):
    """Output parity: the engine's greedy continuations of amdfleet's fixed prompt set,
    token ids compared with a reference recorded for the same model and revision."""

    reference: str = Field(
        description="The reference file (JSON, `amdfleet parity record` or scripts/setup "
        "write one): an absolute path, or one relative to the project directory (where "
        "Pulumi.yaml is), e.g. stacks/references/<stack>.json kept with the stack."
    )
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None,
        description="Which of the reference's recorded dtypes to compare with; default: "
        "the dtype the stack serves (serving.dtype as the plan resolves it).",
    )
    tokens: int = Field(
        16, ge=1, le=256, description="Compare the first K generated tokens of each prompt."
    )
    min_match: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Minimum share of prompts whose first `tokens` tokens match the "
        "reference exactly.",
    )
    concurrency: int = Field(4, ge=1, description="Prompts in flight.")


def _no_zero(value: float | None, info: ValidationInfo) -> float | None:
    if value is not None and value <= 0:
        leave_out = (
            ""
            if info.field_name == "min_success_rate"
            else f", or leave {info.field_name} out to report the metric without gating on it"
        )
        raise ValueError(
            f"a threshold of {value:g} cannot fail — set a level a broken deployment "
            f"falls below{leave_out}"
        )
    return value


class Thresholds(SpecModel):
    """What the verification must meet for the stack to be marked ready. A threshold
    must be able to fail: zero is refused."""

    min_success_rate: float = Field(
        1.0, le=1, description="Minimum fraction of benchmark requests that succeed."
    )
    min_output_throughput: float | None = Field(
        None, description="Minimum output tokens/s (each scenario)."
    )
    max_p99_ttft_ms: float | None = Field(None, gt=0, description="Maximum p99 TTFT, ms.")
    max_p99_tpot_ms: float | None = Field(None, gt=0, description="Maximum p99 TPOT, ms.")
    min_flexible_accuracy: float | None = Field(
        None,
        le=1,
        description="Minimum GSM8K flexible-extract exact match; unset, the accuracy task "
        "is reported without gating (a smoke test).",
    )
    min_strict_accuracy: float | None = Field(
        None, le=1, description="Minimum GSM8K strict-match exact match."
    )

    _positive = field_validator(
        "min_success_rate",
        "min_output_throughput",
        "min_flexible_accuracy",
        "min_strict_accuracy",
    )(_no_zero)


class VerificationSpec(SpecModel):
    """The gate between 'deployed' and 'ready'."""

    enabled: bool = Field(True, description="Run verification after the engine is up.")
    scenarios: tuple[BenchmarkScenario, ...] = Field(
        (), description="Serving benchmarks to run, in order."
    )
    accuracy: AccuracySpec | None = Field(None, description="Accuracy check to run.")
    parity: ParitySpec | None = Field(
        None,
        description="Output-parity check against a recorded reference; it runs first, and "
        "a failed one stops the verification (an engine computing the wrong tokens has no "
        "performance worth measuring).",
    )
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Pass/fail thresholds.")
    baseline: str | None = Field(
        None,
        description="Catalog baseline id (a seed's published numbers) to compare against.",
    )
    request_timeout_s: float = Field(
        600, gt=0, description="Per-request timeout during verification."
    )
    allow_no_benchmark: bool = Field(
        False,
        description="Let an enabled verification run no benchmark scenario (e.g. accuracy "
        "only); without it a verification block with no scenario is rejected, since the "
        "gate would pass having measured no serving performance.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> VerificationSpec:
        if dupes := repeated(s.name for s in self.scenarios):
            raise ValueError(
                f"scenario names must be unique; repeated: {', '.join(dupes)} — rename them"
            )
        return self


def repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    seen = list(names)
    return sorted({n for n in seen if seen.count(n) > 1})
