"""The engine's own admission limits against the load the stack verifies.

Each engine refuses requests past some limits of its own (the manifest's ``limits``,
read from its code at the pinned version): TGI answers 429 "Model is overloaded" past
``--max-concurrent-requests`` (128 by default), vLLM 503 past ``--max-num-queued-reqs``
and SGLang 503 past ``--max-queued-requests`` when they are set, and all three refuse a
request longer than their context. A verification that the engine itself refuses fails
for a reason that says nothing about the deployment, so the planner renders limits that
admit the stack's own scenarios and accuracy run (:func:`peak_load`) and refuses limits
(from ``engine.extra_args``) that do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amdfleet.config import VerificationSpec
from amdfleet.engines.flags import Flags, canonical_flag
from amdfleet.engines.manifest import EngineManifest
from amdfleet.findings import Finding, config_issue

GSM8K_PROMPT_TOKENS = 1200
"""A generous bound on a 5-shot GSM8K prompt's tokens (about 900 with Llama 3's
tokenizer), for the accuracy run's longest request."""


@dataclass(frozen=True)
class Load:
    """The most the stack's verification asks of the engine at once."""

    requests: int
    """Requests in flight at the peak (closed loop: the concurrency; open loop, with no
    cap: every request of the scenario, as when the engine serves slower than they
    arrive)."""
    input_tokens: int
    request_tokens: int
    """The longest request: prompt plus generated tokens."""
    source: str
    """Which scenario (or the accuracy run) makes the peak, for messages."""


@dataclass(frozen=True)
class Limit:
    """One limit of an engine that refuses requests past it."""

    key: str
    """The manifest's ``limits`` key (its flag and default come from there)."""
    kind: str
    """What it bounds: ``requests`` in flight, ``queued_tokens`` (prompt tokens waiting),
    ``request_tokens`` (one request's prompt + output) or ``input_tokens``."""
    slack: int = 0
    """How far under the load the limit must stay (SGLang refuses at ``>=`` its context)."""


LIMITS: dict[str, tuple[Limit, ...]] = {
    "vllm": (
        Limit("max_num_queued_reqs", "requests"),
        Limit("max_num_queued_tokens", "queued_tokens"),
        Limit("max_model_len", "request_tokens"),
    ),
    "sglang": (
        Limit("max_queued_requests", "requests"),
        Limit("context_length", "request_tokens", slack=1),
    ),
    "tgi": (
        Limit("max_concurrent_requests", "requests"),
        Limit("max_total_tokens", "request_tokens"),
        Limit("max_input_tokens", "input_tokens"),
    ),
}
"""Per engine, the limits that refuse (not queue) a request; what each does at the
pinned version is in the manifest's ``limits`` with its source lines."""


def peak_load(verification: VerificationSpec) -> Load | None:
    """The peak the verification puts on the engine; None when it sends nothing."""
    if not verification.enabled:
        return None
    candidates: list[Load] = []
    for scenario in verification.scenarios:
        requests = scenario.num_prompts
        if scenario.max_concurrency:
            requests = min(requests, scenario.max_concurrency)
        prompt = math.ceil(scenario.input_len * (1 + scenario.range_ratio))
        output = math.ceil(scenario.output_len * (1 + scenario.range_ratio))
        candidates.append(Load(requests, prompt, prompt + output, f"scenario '{scenario.name}'"))
    accuracy = verification.accuracy
    if accuracy is not None:
        prompt = GSM8K_PROMPT_TOKENS
        tokens = prompt + accuracy.max_tokens
        candidates.append(Load(accuracy.concurrency, prompt, tokens, "the accuracy run"))
    if not candidates:
        return None
    peak = max(candidates, key=lambda load: load.requests)
    return Load(
        peak.requests,
        max(c.input_tokens for c in candidates),
        max(c.request_tokens for c in candidates),
        peak.source,
    )


def admission_issues(
    engine: str, manifest: EngineManifest, flags: Flags, load: Load, extra_args: tuple[str, ...]
) -> list[Finding]:
    """Every limit of the rendered command (or the engine's default) that would refuse
    part of ``load``."""
    given = {canonical_flag(name): value for name, value in flags}
    issues: list[Finding] = []
    for limit in LIMITS.get(engine, ()):
        facts = manifest.limits.get(limit.key)
        if facts is None:
            continue
        flag = str(facts["flag"])
        value = _int(given.get(canonical_flag(flag)), facts.get("default"))
        need = _need(limit, load)
        if value is None or value - limit.slack >= need:
            continue
        field = _field(flag, extra_args)
        issues.append(
            config_issue(
                field,
                f"{manifest.label} refuses requests past {flag} {value} ({facts['effect']}), "
                f"but the stack's verification needs {need} ({_what(limit)}, {load.source})",
                f"raise {flag} to at least {need + limit.slack}, or make the verification lighter",
            )
        )
    return issues


def _need(limit: Limit, load: Load) -> int:
    return {
        "requests": load.requests,
        "queued_tokens": load.requests * load.input_tokens,
        "request_tokens": load.request_tokens,
        "input_tokens": load.input_tokens,
    }[limit.kind]


def _what(limit: Limit) -> str:
    return {
        "requests": "requests in flight",
        "queued_tokens": "prompt tokens waiting at once",
        "request_tokens": "tokens in its longest request",
        "input_tokens": "tokens in its longest prompt",
    }[limit.kind]


def _field(flag: str, extra_args: tuple[str, ...]) -> str:
    for index, token in enumerate(extra_args):
        if canonical_flag(token.partition("=")[0]) == canonical_flag(flag):
            return f"engine.extra_args[{index}]"
    return "serving"


def _int(value: str | None, default: object) -> int | None:
    if value is not None:
        try:
            return int(value)
        except ValueError:
            return None
    return int(default) if isinstance(default, int | float) else None
