"""Load generation: send a scenario's prompts at a concurrency cap and/or arrival rate.

Arrivals follow ``vllm bench serve``: inter-arrival gaps drawn from a gamma
distribution (shape = burstiness, so 1.0 is a Poisson process) with numpy's legacy
generator seeded like vLLM's ``np.random.seed(seed)``, then rescaled so the last request
arrives at ``num_prompts / rate``; an infinite rate sends everything at once. The
concurrency cap is a semaphore taken before a request is sent, and a request's clock
starts when it is sent, not when it arrived (as in vLLM).

A stop event (Ctrl-C in the CLI) cancels the requests in flight and keeps the ones that
finished; the run is then marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from typing import Any

from amdfleet.plan.models import ScenarioInput
from amdfleet.verify.client import EndpointClient, RequestOutput, error_kind
from amdfleet.verify.datasets import (
    BenchRequest,
    DatasetError,
    Tokenizer,
    prompt_file_requests,
    random_requests,
    sharegpt_requests,
)
from amdfleet.verify.metrics import DEFAULT_PERCENTILES, BenchmarkMetrics, compute_metrics

BACKEND_NAMES = {"completions": "openai", "chat": "openai-chat"}


@dataclass(frozen=True)
class BenchmarkRun:
    """One scenario's run: its settings, every request's output and the metrics."""

    scenario: ScenarioInput
    model: str
    tokenizer: str | None
    date: str
    outputs: tuple[RequestOutput, ...]
    metrics: BenchmarkMetrics
    interrupted: bool = False

    def failure_reasons(self) -> dict[str, int]:
        """Failed requests counted by the kind of failure (``HTTP 500``, ``timeout``...)."""
        counts: dict[str, int] = {}
        for o in self.outputs:
            if not o.success:
                kind = error_kind(o.error)
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def to_json(self, *, detailed: bool = False) -> dict[str, Any]:
        """The run as ``vllm bench serve --save-result`` writes it (same key names).

        ``detailed`` adds the per-request lists (``--save-detailed``). Failure reasons
        are always included (``errors`` holds the distinct ones, with counts).
        """
        s = self.scenario
        rate = s.request_rate if s.request_rate is not None else math.inf
        result: dict[str, Any] = {
            "date": self.date,
            "endpoint_type": BACKEND_NAMES[s.endpoint],
            "backend": BACKEND_NAMES[s.endpoint],
            "label": s.name,
            "model_id": self.model,
            "tokenizer_id": self.tokenizer,
            "num_prompts": s.num_prompts,
            "request_rate": rate if math.isfinite(rate) else "inf",
            "burstiness": s.burstiness if math.isfinite(s.burstiness) else "inf",
            "max_concurrency": s.max_concurrency,
            **self.metrics.to_dict(),
            "interrupted": self.interrupted,
            "failure_reasons": self.failure_reasons(),
        }
        if detailed:
            outs = self.outputs
            result.update(
                input_lens=[o.prompt_len for o in outs],
                output_lens=[o.output_tokens if o.success else 0 for o in outs],
                ttfts=[o.ttft for o in outs],
                itls=[o.itl for o in outs],
                latencies=[o.latency for o in outs],
                start_times=[o.start_time for o in outs],
                generated_texts=[o.text for o in outs],
                errors=[o.error for o in outs],
            )
        return result


def build_requests(scenario: ScenarioInput, tokenizer: Tokenizer | None) -> list[BenchRequest]:
    """The scenario's prompts (random and ShareGPT need the tokenizer)."""
    if scenario.dataset == "prompts":
        assert scenario.dataset_path is not None  # the schema requires it
        return prompt_file_requests(
            scenario.dataset_path,
            tokenizer,
            num_prompts=scenario.num_prompts,
            output_len=scenario.output_len,
        )
    if tokenizer is None:
        raise DatasetError(f"dataset '{scenario.dataset}' needs the model's tokenizer")
    if scenario.dataset == "sharegpt":
        assert scenario.dataset_path is not None
        return sharegpt_requests(
            scenario.dataset_path,
            tokenizer,
            num_prompts=scenario.num_prompts,
            output_len=scenario.output_len,
            seed=scenario.seed,
        )
    return random_requests(
        tokenizer,
        num_prompts=scenario.num_prompts,
        input_len=scenario.input_len,
        output_len=scenario.output_len,
        range_ratio=scenario.range_ratio,
        seed=scenario.seed,
    )


def arrival_times(
    count: int, rate: float | None, burstiness: float = 1.0, seed: int = 0
) -> list[float]:
    """Seconds after the start at which each request arrives (vLLM's schedule)."""
    if rate is None or math.isinf(rate):
        return [0.0] * count
    if math.isinf(burstiness):
        gaps = [1.0 / rate] * count
    else:
        import numpy as np

        rng = np.random.RandomState(seed)
        theta = 1.0 / (rate * burstiness)
        gaps = [float(rng.gamma(shape=burstiness, scale=theta)) for _ in range(count)]
    import numpy as np

    times = np.cumsum(gaps)
    if times[-1] != 0:
        times *= (count / rate) / times[-1]
    return [float(t) for t in times]


async def run_scenario(
    client: EndpointClient,
    scenario: ScenarioInput,
    requests: Sequence[BenchRequest],
    *,
    model: str,
    tokenizer: str | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput: Mapping[str, float] | None = None,
    stop: asyncio.Event | None = None,
    on_done: Callable[[RequestOutput], None] | None = None,
) -> BenchmarkRun:
    """Send ``requests`` as the scenario says and measure them.

    Never raises for failed requests (they are counted with their reasons). If
    ``stop`` is set mid-run, in-flight requests are cancelled and the run returns
    what completed, marked ``interrupted``.
    """
    date = datetime.now().strftime("%Y%m%d-%H%M%S")
    outputs: list[RequestOutput | None] = [None] * len(requests)
    start = perf_counter()
    dispatch = asyncio.create_task(_dispatch(client, scenario, requests, model, outputs, on_done))
    interrupted = await wait_or_stop(dispatch, stop)
    duration = perf_counter() - start
    done = tuple(o for o in outputs if o is not None)
    return BenchmarkRun(
        scenario=scenario,
        model=model,
        tokenizer=tokenizer,
        date=date,
        outputs=done,
        metrics=compute_metrics(done, duration, percentiles, goodput),
        interrupted=interrupted,
    )


def request_payload(scenario: ScenarioInput, request: BenchRequest, model: str) -> dict[str, Any]:
    """The JSON body for one request (streaming keys are added by the client)."""
    payload: dict[str, Any] = {"model": model, "max_tokens": request.output_len}
    if scenario.endpoint == "chat":
        payload["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        payload["prompt"] = request.prompt
    if scenario.ignore_eos:
        payload["ignore_eos"] = True
    return payload


async def _dispatch(
    client: EndpointClient,
    scenario: ScenarioInput,
    requests: Sequence[BenchRequest],
    model: str,
    outputs: list[RequestOutput | None],
    on_done: Callable[[RequestOutput], None] | None,
) -> None:
    limit = scenario.max_concurrency
    semaphore = asyncio.Semaphore(limit) if limit else None
    arrivals = arrival_times(
        len(requests), scenario.request_rate, scenario.burstiness, scenario.seed
    )

    async def send(index: int, request: BenchRequest) -> None:
        payload = request_payload(scenario, request, model)
        if semaphore is None:
            out = await client.stream(scenario.endpoint, payload, prompt_len=request.prompt_len)
        else:
            async with semaphore:
                out = await client.stream(scenario.endpoint, payload, prompt_len=request.prompt_len)
        outputs[index] = out
        if on_done is not None:
            on_done(out)

    tasks: list[asyncio.Task[None]] = []
    start = perf_counter()
    try:
        for index, (request, arrival) in enumerate(zip(requests, arrivals, strict=True)):
            wait = start + arrival - perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(send(index, request)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_or_stop(task: asyncio.Task[None], stop: asyncio.Event | None) -> bool:
    """Await ``task``; if ``stop`` is set first, cancel it. True when it was stopped."""
    if stop is None:
        await task
        return False
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        task.result()
        return False
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return True
