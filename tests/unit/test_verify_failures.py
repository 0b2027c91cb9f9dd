"""Failure paths: every broken request is a failed request with its reason, never a crash.

Faults come from the scripted test server (a real HTTP server on loopback): vLLM cannot
be made to send HTTP 500s, malformed events or a cut stream on demand.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from amdfleet.config import BenchmarkScenario, Thresholds, VerificationSpec
from amdfleet.plan.verification import scenario_input, verification_input
from amdfleet.verify.bench import BenchmarkRun, run_scenario
from amdfleet.verify.client import EndpointClient, EndpointError
from amdfleet.verify.datasets import BenchRequest
from amdfleet.verify.run import first_model
from amdfleet.verify.verdict import judge
from tests.support.openai_server import OpenAIServer, Script

SECTION = VerificationSpec(
    scenarios=(BenchmarkScenario(name="faults", num_prompts=6, output_len=5, max_concurrency=2),),
    thresholds=Thresholds(min_success_rate=0.9),
)
SCENARIO = scenario_input(SECTION.scenarios[0])
REQUESTS = [BenchRequest(f"prompt {i}", 3, 5) for i in range(6)]


def _run(url: str, timeout: float = 5.0) -> BenchmarkRun:
    async def go() -> BenchmarkRun:
        async with EndpointClient(url, concurrency=2, timeout=timeout) as client:
            return await run_scenario(client, SCENARIO, REQUESTS, model="stub-model")

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http500", "HTTP 500: injected failure"),
        ("malformed_sse", "malformed SSE event"),
        ("close_mid_stream", "connection lost"),
        ("missing_usage", "no usage"),
        ("error_event", "server error in stream: injected stream error"),
    ],
)
def test_each_fault_is_a_failed_request_with_its_reason(fault: str, reason: str) -> None:
    with OpenAIServer(Script(fault=fault, fault_every=2)) as server:
        run = _run(server.url)
    assert (run.metrics.completed, run.metrics.failed) == (3, 3)
    failed = [o for o in run.outputs if not o.success]
    assert all(o.error.startswith(reason) for o in failed), [o.error for o in failed]
    assert run.metrics.total_output == 15  # successes still count their tokens
    [(kind, count)] = run.failure_reasons().items()  # one kind of failure, counted once each
    assert count == 3 and reason.startswith(kind), (kind, reason)


def test_hang_past_the_timeout_fails_only_that_request() -> None:
    with OpenAIServer(Script(fault="hang", fault_every=3)) as server:
        run = _run(server.url, timeout=0.3)
    assert (run.metrics.completed, run.metrics.failed) == (4, 2)
    assert run.failure_reasons() == {"timeout": 2}


def test_server_down_fails_every_request() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    run = _run(url)
    assert (run.metrics.completed, run.metrics.failed) == (0, 6)
    assert run.failure_reasons() == {"connection failed": 6}
    assert run.metrics.output_throughput == 0.0


def test_server_down_is_a_clear_error_when_looking_up_the_model() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(EndpointError, match="cannot reach the server"):
        asyncio.run(first_model(url, None))


def test_verdict_fails_when_success_rate_is_below_threshold() -> None:
    with OpenAIServer(Script(fault="http500", fault_every=3)) as server:
        run = _run(server.url)
    spec = verification_input(SECTION, None)
    rows = judge(spec, [run], None)
    success = next(r for r in rows if r.metric == "success_rate")
    assert success.observed == pytest.approx(4 / 6)
    assert success.passed is False and success.expected == ">= 0.9"


def test_connections_are_reused_after_complete_responses() -> None:
    with OpenAIServer() as server:
        run = _run(server.url)
        assert run.metrics.completed == 6
        # keep-alive: two connections (the concurrency) served all six requests
        assert 1 <= len(server.client_ports) <= 2
