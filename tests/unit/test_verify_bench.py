"""Load shapes (arrivals, concurrency cap), payloads, stopping, and the result JSON."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from amdfleet.config import BenchmarkScenario
from amdfleet.plan.models import ScenarioInput
from amdfleet.plan.verification import scenario_input
from amdfleet.verify.bench import BenchmarkRun, arrival_times, request_payload, run_scenario
from amdfleet.verify.client import EndpointClient, RequestOutput
from amdfleet.verify.datasets import BenchRequest
from amdfleet.verify.metrics import compute_metrics
from tests.support.openai_server import OpenAIServer, Script


def _scenario(**fields: Any) -> ScenarioInput:
    """A benchmark scenario (config defaults filled in) as the plan hands it on."""
    return scenario_input(BenchmarkScenario(**fields))


def test_infinite_rate_sends_everything_at_once() -> None:
    assert arrival_times(4, None) == [0.0] * 4
    assert arrival_times(4, math.inf) == [0.0] * 4


def test_poisson_arrivals_are_vllms_schedule() -> None:
    times = arrival_times(5, 2.0, 1.0, seed=7)
    # vLLM: np.random.seed(seed), gaps ~ gamma(burstiness, 1/(rate*burstiness)),
    # cumulative, rescaled so the last arrival is at num_prompts / rate.
    rng = np.random.RandomState(7)
    gaps = np.cumsum([rng.gamma(shape=1.0, scale=0.5) for _ in range(5)])
    expected = gaps * (5 / 2.0) / gaps[-1]
    assert times == pytest.approx(expected.tolist())
    assert times[-1] == pytest.approx(2.5)
    assert arrival_times(5, 2.0, 1.0, seed=7) == times  # seeded


def test_burstiness_shapes_the_gaps() -> None:
    steady = np.diff(arrival_times(200, 10.0, burstiness=50.0, seed=1))
    bursty = np.diff(arrival_times(200, 10.0, burstiness=0.2, seed=1))
    assert np.std(bursty) > 3 * np.std(steady)
    assert arrival_times(3, 4.0, burstiness=math.inf) == pytest.approx([0.25, 0.5, 0.75])


def test_payloads_for_both_endpoints() -> None:
    request = BenchRequest("hello", 2, 7)
    completions = _scenario(name="a")
    assert request_payload(completions, request, "m") == {
        "model": "m",
        "max_tokens": 7,
        "prompt": "hello",
        "ignore_eos": True,
    }
    chat = _scenario(name="b", endpoint="chat", ignore_eos=False)
    assert request_payload(chat, request, "m") == {
        "model": "m",
        "max_tokens": 7,
        "messages": [{"role": "user", "content": "hello"}],
    }


def _bench(url: str, scenario: ScenarioInput, stop: asyncio.Event | None = None) -> BenchmarkRun:
    requests = [BenchRequest(f"p{i}", 2, scenario.output_len) for i in range(scenario.num_prompts)]

    async def go() -> BenchmarkRun:
        async with EndpointClient(url, api_key="sekrit", concurrency=8, timeout=10) as client:
            return await run_scenario(client, scenario, requests, model="stub-model", stop=stop)

    return asyncio.run(go())


def test_concurrency_cap_is_respected_and_tokens_come_from_usage() -> None:
    scenario = _scenario(name="cap", num_prompts=8, output_len=4, max_concurrency=3)
    with OpenAIServer(Script(token_delay=0.01)) as server:
        run = _bench(server.url, scenario)
    assert server.max_in_flight == 3
    assert run.metrics.completed == 8 and run.metrics.total_output == 32
    assert all(o.output_tokens == 4 and len(o.token_times) == 4 for o in run.outputs)
    body = server.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 4
    assert server.headers[0]["Authorization"] == "Bearer sekrit"


def test_chat_endpoint_streams_too() -> None:
    scenario = _scenario(name="chat", endpoint="chat", num_prompts=3, output_len=2)
    with OpenAIServer() as server:
        run = _bench(server.url, scenario)
    assert run.metrics.completed == 3 and run.metrics.total_output == 6
    contents = []
    for body in server.bodies:
        assert "prompt" not in body and body["stream"] is True and body["max_tokens"] == 2
        [message] = body["messages"]
        assert message["role"] == "user"
        contents.append(message["content"])
    assert sorted(contents) == ["p0", "p1", "p2"]  # each request's prompt, sent once


def test_stop_cancels_in_flight_requests_and_keeps_completed_ones() -> None:
    scenario = _scenario(name="stop", num_prompts=20, output_len=20, max_concurrency=2)
    requests = [BenchRequest(f"p{i}", 2, 20) for i in range(20)]
    done: list[RequestOutput] = []

    async def go() -> BenchmarkRun:
        stop = asyncio.Event()

        def on_done(out: RequestOutput) -> None:
            done.append(out)
            if len(done) == 3:
                stop.set()

        async with EndpointClient(server.url, concurrency=2, timeout=10) as client:
            return await run_scenario(
                client, scenario, requests, model="stub-model", stop=stop, on_done=on_done
            )

    with OpenAIServer(Script(token_delay=0.005)) as server:
        run = asyncio.run(go())
    assert run.interrupted
    assert 3 <= run.metrics.completed < 20
    assert run.metrics.failed == 0  # cancelled requests are dropped, not failures
    assert run.to_json()["interrupted"] is True


def test_result_json_has_vllm_fields() -> None:
    scenario = _scenario(name="j", num_prompts=2, output_len=3, request_rate=50.0)
    with OpenAIServer() as server:
        run = _bench(server.url, scenario)
    data = run.to_json(detailed=True)
    assert data["backend"] == "openai" and data["label"] == "j"
    assert data["request_rate"] == 50.0 and data["max_concurrency"] is None
    assert data["output_lens"] == [3, 3] and len(data["itls"][0]) == 2
    assert data["failure_reasons"] == {}


def test_infinite_rate_is_written_as_inf() -> None:
    run = BenchmarkRun(
        scenario=_scenario(name="x"),
        model="m",
        tokenizer=None,
        date="d",
        outputs=(),
        metrics=compute_metrics([], duration=1.0),
    )
    assert run.to_json()["request_rate"] == "inf"
