"""The engines' own admission limits admit the load each stack verifies.

What refuses a request, per engine at its pinned version, is in the manifests' ``limits``
(read from the engines' code: TGI's router semaphore of ``--max-concurrent-requests``,
vLLM's ``--max-num-queued-reqs``/``--max-num-queued-tokens`` admission check, SGLang's
``--max-queued-requests`` and ``--context-length``). For every committed stack the peak
in-flight load of its own scenarios and accuracy run is computed here independently of
the planner, and the limits its rendered command sets (or the engine's defaults) must
admit it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from amdfleet.config import load_stack_file, parse_stack, stack_names
from amdfleet.engines import engine
from amdfleet.engines.flags import parse_flags
from amdfleet.engines.manifest import manifest
from amdfleet.errors import PlanError
from amdfleet.plan import plan
from amdfleet.plan.admission import GSM8K_PROMPT_TOKENS, LIMITS, peak_load
from tests.unit.test_image_plan import _sections


def _peak_requests(name: str) -> int:
    """In flight at once, the slowest-engine case: a capped scenario its cap, an uncapped
    one (closed or open loop) all of its requests; the accuracy run its concurrency."""
    verification = load_stack_file(name).spec.verification
    peaks = [min(s.num_prompts, s.max_concurrency or s.num_prompts) for s in verification.scenarios]
    if verification.accuracy is not None:
        peaks.append(verification.accuracy.concurrency)
    return max(peaks)


def _longest_request(name: str) -> int:
    verification = load_stack_file(name).spec.verification
    longest = [
        math.ceil(s.input_len * (1 + s.range_ratio)) + math.ceil(s.output_len * (1 + s.range_ratio))
        for s in verification.scenarios
    ]
    if verification.accuracy is not None:
        longest.append(GSM8K_PROMPT_TOKENS + verification.accuracy.max_tokens)
    return max(longest)


def _limit(flags: dict[str, str | None], facts: dict[str, Any]) -> int | None:
    value = flags.get(facts["flag"])
    if value is not None:
        return int(value)
    return facts["default"]


@pytest.mark.parametrize("name", stack_names())
def test_the_rendered_limits_admit_the_stacks_own_verification(name: str) -> None:
    planned = plan(load_stack_file(name).spec)
    found = manifest(planned.engine.name, planned.engine.version)
    assert found is not None
    lead = len(engine(planned.engine.name).command) + (planned.engine.name == "vllm")
    requests, longest = _peak_requests(name), _longest_request(name)
    for node in planned.nodes:
        flags = dict(parse_flags(node.argv[lead:]))
        for limit in LIMITS[planned.engine.name]:
            value = _limit(flags, found.limits[limit.key])
            if value is None:
                continue  # unbounded at this version's default
            if limit.kind == "requests":
                assert value >= requests, (name, limit.key, value, requests)
            elif limit.kind == "request_tokens":
                assert value - limit.slack >= longest, (name, limit.key, value, longest)


def test_tgi_is_given_room_for_the_open_loop_sweep() -> None:
    """Seed 001's 5 RPS step sends 150 requests with no cap: past TGI's default of 128 in
    flight, a slow engine would answer 429 to the rest."""
    planned = plan(load_stack_file("mi300x-llama405b-tgi").spec)
    argv = list(planned.head.argv)
    assert _peak_requests("mi300x-llama405b-tgi") == 150
    assert argv[argv.index("--max-concurrent-requests") + 1] == "150"
    tgi = manifest("tgi", planned.engine.version)
    assert tgi is not None and tgi.limits["max_concurrent_requests"]["default"] == 128


def test_the_planner_computes_the_same_peak() -> None:
    for name in stack_names():
        load = peak_load(load_stack_file(name).spec.verification)
        assert load is not None
        assert (load.requests, load.request_tokens) == (
            _peak_requests(name),
            _longest_request(name),
        )


@pytest.mark.parametrize(
    ("stack", "args", "flag"),
    [
        ("mi300x-llama405b-vllm", ["--max-num-queued-reqs", "16"], "--max-num-queued-reqs"),
        ("mi300x-llama405b-sglang", ["--max-queued-requests", "8"], "--max-queued-requests"),
        ("mi300x-llama405b-tgi", ["--max-concurrent-requests", "32"], "--max-concurrent-requests"),
    ],
)
def test_a_limit_that_refuses_the_verification_is_refused(
    stack: str, args: list[str], flag: str
) -> None:
    sections = _sections(stack)
    sections["engine"] = {**sections["engine"], "extra_args": args}
    with pytest.raises(PlanError) as caught:
        plan(parse_stack(stack, sections))
    (issue,) = caught.value.issues
    assert issue.subject == "engine.extra_args[0]"
    assert f"refuses requests past {flag} {args[1]}" in issue.detail
    assert f"needs {_peak_requests(stack)} (requests in flight" in issue.detail
