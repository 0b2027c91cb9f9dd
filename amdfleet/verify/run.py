"""Orchestration: benchmark scenarios, the accuracy check and the verdict, end to end.

:func:`run_verification` is the synchronous entry point the Pulumi provider calls;
the CLI drives the async functions directly so Ctrl-C (a stop event) and a progress
bar can be wired in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from amdfleet.plan.models import AccuracyInput, ParityInput, ScenarioInput, VerificationInput
from amdfleet.verify import PARITY_PHASE
from amdfleet.verify.bench import BenchmarkRun, build_requests, run_scenario
from amdfleet.verify.client import EndpointClient
from amdfleet.verify.datasets import Tokenizer, load_tokenizer
from amdfleet.verify.gsm8k import AccuracyResult, Problem, Scored, load_problems, run_gsm8k
from amdfleet.verify.metrics import DEFAULT_PERCENTILES
from amdfleet.verify.parity import (
    ParityReference,
    ParityReferenceError,
    ParityResult,
    run_parity,
)
from amdfleet.verify.reference import load_reference
from amdfleet.verify.report import write_verification
from amdfleet.verify.verdict import VerificationResult, judge, resolve_baseline

_MODEL_LOOKUP_TIMEOUT_S = 30.0


class Progress(Protocol):
    """Where long runs report progress (the CLI draws a bar; the library draws nothing)."""

    def start(self, label: str, total: int) -> None:
        """A phase of ``total`` requests begins."""

    def advance(self) -> None:
        """One request finished."""

    def finish(self) -> None:
        """The phase ended (completed or interrupted)."""


def run_verification(
    spec: VerificationInput,
    *,
    base_url: str,
    model: str | None = None,
    api_key: str | None = None,
    tokenizer: str | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    on_run: Callable[[BenchmarkRun], None] | None = None,
    on_scored: Callable[[Scored], None] | None = None,
) -> VerificationResult:
    """Run a stack's whole verification (as planned) against an endpoint and judge it.

    Synchronous (runs its own event loop; call it from a thread without one). The model
    defaults to the first one the server lists; the tokenizer (needed by random and
    ShareGPT scenarios) defaults to the model id. Writes JSON, markdown and plots into
    ``out_dir`` when given. Never raises for failed requests: they count against the
    success rate. Raises ``EndpointError`` when the server cannot be reached at all,
    ``ConfigError`` for an unknown baseline, and dataset errors for missing data.

    ``progress`` hears each phase and request, ``on_run`` each finished scenario and
    ``on_scored`` each scored GSM8K problem, before ``progress`` counts it (all are
    called on the event loop's thread).
    """
    return asyncio.run(
        verify_endpoint(
            spec,
            base_url=base_url,
            model=model,
            api_key=api_key,
            tokenizer=tokenizer,
            out_dir=out_dir,
            progress=progress,
            on_run=on_run,
            on_scored=on_scored,
        )
    )


async def verify_endpoint(
    spec: VerificationInput,
    *,
    base_url: str,
    model: str | None = None,
    api_key: str | None = None,
    tokenizer: str | None = None,
    out_dir: Path | None = None,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    on_run: Callable[[BenchmarkRun], None] | None = None,
    on_scored: Callable[[Scored], None] | None = None,
) -> VerificationResult:
    """The async body of :func:`run_verification`, with a stop event and progress.

    A verification with ``enabled: false`` contacts nothing and passes with no rows.
    """
    if not spec.enabled:
        return VerificationResult(input=spec, model=model or "", base_url=base_url)
    resolve_baseline(spec.baseline)
    reference = load_reference(spec.parity) if spec.parity is not None else None
    model = model or await first_model(base_url, api_key)
    parity = None
    if spec.parity is not None and reference is not None:
        if progress is not None:
            progress.start(PARITY_PHASE, len(reference.prompts))
        try:
            parity = await check_parity(
                base_url,
                spec.parity,
                reference,
                model=model,
                api_key=api_key,
                timeout=spec.request_timeout_s,
                stop=stop,
            )
        finally:
            if progress is not None:
                progress.finish()
        if parity.interrupted or parity.share < spec.parity.min_match:
            rows = judge(spec, (), None, parity)
            result = VerificationResult(
                input=spec,
                model=model,
                base_url=base_url,
                rows=rows,
                interrupted=parity.interrupted,
                parity=parity,
                stopped=""
                if parity.interrupted
                else "output parity failed, so the benchmarks and the accuracy check did not "
                "run (an engine that computes the wrong tokens has no performance or accuracy "
                "worth measuring)",
            )
            if out_dir is not None:
                write_verification(result, out_dir)
            return result
    runs = await run_scenarios(
        base_url,
        spec.scenarios,
        model=model,
        api_key=api_key,
        tokenizer=tokenizer,
        timeout=spec.request_timeout_s,
        stop=stop,
        progress=progress,
        on_run=on_run,
    )
    interrupted = any(r.interrupted for r in runs) or (stop is not None and stop.is_set())
    accuracy = None
    if spec.accuracy is not None and not interrupted:
        accuracy = await run_accuracy(
            base_url,
            spec.accuracy,
            model=model,
            api_key=api_key,
            timeout=spec.request_timeout_s,
            stop=stop,
            progress=progress,
            on_scored=on_scored,
        )
        interrupted = accuracy.interrupted
    result = VerificationResult(
        input=spec,
        model=model,
        base_url=base_url,
        runs=tuple(runs),
        accuracy=accuracy,
        rows=judge(spec, runs, accuracy, parity),
        interrupted=interrupted,
        parity=parity,
    )
    if out_dir is not None:
        write_verification(result, out_dir)
    return result


async def check_parity(
    base_url: str,
    spec: ParityInput,
    reference: ParityReference,
    *,
    model: str,
    api_key: str | None = None,
    timeout: float = 120.0,
    stop: asyncio.Event | None = None,
) -> ParityResult:
    """The output-parity check against an endpoint (see :mod:`amdfleet.verify.parity`)."""
    if spec.dtype is None:  # load_reference refuses such a block first
        raise ParityReferenceError(
            "not set", "set it to a dtype the reference holds", field="verification.parity.dtype"
        )
    async with EndpointClient(
        base_url, api_key=api_key, concurrency=spec.concurrency, timeout=timeout
    ) as client:
        return await run_parity(client, spec, reference, model=model, dtype=spec.dtype, stop=stop)


async def first_model(base_url: str, api_key: str | None) -> str:
    """The first model id the server lists (``GET /v1/models``)."""
    async with EndpointClient(
        base_url, api_key=api_key, concurrency=1, timeout=_MODEL_LOOKUP_TIMEOUT_S
    ) as client:
        return await client.first_model()


async def run_scenarios(
    base_url: str,
    scenarios: Sequence[ScenarioInput],
    *,
    model: str,
    api_key: str | None = None,
    tokenizer: str | None = None,
    timeout: float = 600.0,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput: Mapping[str, float] | None = None,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    on_run: Callable[[BenchmarkRun], None] | None = None,
) -> list[BenchmarkRun]:
    """Run scenarios in order (a sweep); stops after an interrupted one.

    p99 is always computed (thresholds and plots use it), whatever ``percentiles``
    asks for.
    """
    chosen = tuple(sorted({*percentiles, 99.0}))
    needs_tokenizer = any(s.dataset != "prompts" for s in scenarios)
    tok: Tokenizer | None = load_tokenizer(tokenizer or model) if needs_tokenizer else None
    runs: list[BenchmarkRun] = []
    for scenario in scenarios:
        requests = build_requests(scenario, tok)
        pool = scenario.max_concurrency or len(requests)
        if progress is not None:
            progress.start(scenario.name, len(requests))
        async with EndpointClient(
            base_url, api_key=api_key, concurrency=pool, timeout=timeout
        ) as client:
            try:
                run = await run_scenario(
                    client,
                    scenario,
                    requests,
                    model=model,
                    tokenizer=tok.source if tok else None,
                    percentiles=chosen,
                    goodput=goodput,
                    stop=stop,
                    on_done=(lambda _: progress.advance()) if progress else None,
                )
            finally:
                if progress is not None:
                    progress.finish()
        runs.append(run)
        if on_run is not None:
            on_run(run)
        if run.interrupted:
            break
    return runs


async def run_accuracy(
    base_url: str,
    spec: AccuracyInput,
    *,
    model: str,
    api_key: str | None = None,
    timeout: float = 600.0,
    problems: tuple[Sequence[Problem], Sequence[Problem]] | None = None,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    on_scored: Callable[[Scored], None] | None = None,
) -> AccuracyResult:
    """Score GSM8K against the endpoint, ``spec.concurrency`` requests at a time;
    ``on_scored`` hears each problem as it is scored."""
    test, train = problems if problems is not None else load_problems(spec.data_path)
    if progress is not None:
        progress.start("gsm8k", len(test[: spec.limit]))
    try:
        async with EndpointClient(
            base_url, api_key=api_key, concurrency=spec.concurrency, timeout=timeout
        ) as client:
            return await run_gsm8k(
                client,
                spec,
                model=model,
                problems=(test, train),
                stop=stop,
                on_done=_scored_callback(progress, on_scored),
            )
    finally:
        if progress is not None:
            progress.finish()


def _scored_callback(
    progress: Progress | None, on_scored: Callable[[Scored], None] | None
) -> Callable[[Scored], None] | None:
    if progress is None and on_scored is None:
        return None

    def done(scored: Scored) -> None:
        if on_scored is not None:
            on_scored(scored)
        if progress is not None:
            progress.advance()

    return done
