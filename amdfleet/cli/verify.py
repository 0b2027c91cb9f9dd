"""``amdfleet bench``, ``eval``, ``verify`` and ``parity`` (check, record).

All of them work against any OpenAI-compatible endpoint. The API key is read from an
environment variable (``--api-key-env``, default ``AMDFLEET_API_KEY``) and never taken
on the command line, where it would land in shell history and process listings.
Ctrl-C stops a run cleanly: requests in flight are cancelled, completed ones are kept
and written, and the command exits 130.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from amdfleet.config import AccuracySpec, BenchmarkScenario, load_stack_file
from amdfleet.errors import VerificationFailed
from amdfleet.findings import Finding
from amdfleet.verify.metrics import parse_goodput

if TYPE_CHECKING:
    from amdfleet.plan.models import ScenarioInput
    from amdfleet.verify.bench import BenchmarkRun
    from amdfleet.verify.gsm8k import AccuracyResult
    from amdfleet.verify.parity import ParityResult
    from amdfleet.verify.verdict import VerificationResult

# The benchmark client (httpx, numpy, the report's writers) is imported inside each
# command, after its options are parsed, so `--help` and usage errors stay fast.

EXIT_INTERRUPTED = 130
_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

_api_key_env = click.option(
    "--api-key-env",
    default="AMDFLEET_API_KEY",
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the endpoint's API key (unset: no key).",
)
_model = click.option("--model", help="Model name to send; default: the server's first model.")
_timeout = click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="Per-request timeout, s."
)


@click.command()
@click.argument("url")
@_model
@click.option("--tokenizer", help="Tokenizer dir, tokenizer.json or hub id; default: the model.")
@click.option(
    "--endpoint",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
)
@click.option(
    "--dataset",
    type=click.Choice(["random", "sharegpt", "prompts"]),
    default="random",
    show_default=True,
)
@click.option("--dataset-path", type=click.Path(dir_okay=False), help="ShareGPT or prompts file.")
@click.option("--input-len", type=int, default=1024, show_default=True, help="Prompt tokens.")
@click.option("--output-len", type=int, default=128, show_default=True, help="Output tokens.")
@click.option("--range-ratio", type=float, default=0.0, show_default=True)
@click.option("--num-prompts", type=int, default=100, show_default=True)
@click.option(
    "--max-concurrency",
    type=int,
    multiple=True,
    help="Cap on requests in flight; repeat for a sweep (e.g. 10 50 100 200 500).",
)
@click.option(
    "--request-rate",
    multiple=True,
    help="Arrival rate, req/s ('inf' = all at once); repeat for a sweep.",
)
@click.option("--burstiness", type=float, default=1.0, show_default=True, help="1.0 = Poisson.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--percentiles", default="90,95,99", show_default=True)
@click.option("--goodput", multiple=True, help="SLOs like 'ttft:500 tpot:50' (milliseconds).")
@click.option("--ignore-eos/--no-ignore-eos", default=True, show_default=True)
@_api_key_env
@_timeout
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Results dir.")
@click.option("--detailed", is_flag=True, help="Also save per-request lists in the JSON.")
def bench(
    url: str,
    model: str | None,
    tokenizer: str | None,
    endpoint: str,
    dataset: str,
    dataset_path: str | None,
    input_len: int,
    output_len: int,
    range_ratio: float,
    num_prompts: int,
    max_concurrency: tuple[int, ...],
    request_rate: tuple[str, ...],
    burstiness: float,
    seed: int,
    percentiles: str,
    goodput: tuple[str, ...],
    ignore_eos: bool,
    api_key_env: str,
    timeout: float,
    out: Path | None,
    detailed: bool,
) -> None:
    """Benchmark serving at URL the way `vllm bench serve` does.

    Repeat --max-concurrency and/or --request-rate for a sweep; with --out, each point
    is saved as vLLM-compatible JSON, and a sweep adds summary.md and PNG plots.
    """
    from amdfleet.verify.report import render_benchmark_table, write_benchmark
    from amdfleet.verify.run import first_model, run_scenarios

    slos = _goodput(goodput)
    chosen = _percentiles(percentiles)
    common: dict[str, Any] = {
        "dataset": dataset,
        "dataset_path": dataset_path,
        "input_len": input_len,
        "output_len": output_len,
        "range_ratio": range_ratio,
        "num_prompts": num_prompts,
        "burstiness": burstiness,
        "endpoint": endpoint,
        "ignore_eos": ignore_eos,
        "seed": seed,
    }
    scenarios = _sweep(common, max_concurrency, [_rate(r) for r in request_rate])
    api_key = _api_key(api_key_env)

    async def main(stop: asyncio.Event) -> list[BenchmarkRun]:
        served = model or await first_model(url, api_key)
        return await run_scenarios(
            url,
            scenarios,
            model=served,
            api_key=api_key,
            tokenizer=tokenizer,
            timeout=timeout,
            percentiles=chosen,
            goodput=slos,
            stop=stop,
            progress=_ProgressBar(),
            on_run=lambda run: click.echo(render_benchmark_table(run)),
        )

    runs, interrupted = _run(main)
    if out is not None and runs:
        for path in write_benchmark(runs, out, detailed=detailed):
            click.echo(f"wrote {path}")
    _exit_if_interrupted(interrupted)


@click.command("eval")
@click.argument("url")
@_model
@click.option("--limit", type=int, help="Score only the first N test problems.")
@click.option("--num-fewshot", type=int, default=5, show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option(
    "--data-path",
    type=click.Path(file_okay=False),
    help="Directory with GSM8K test.jsonl and train.jsonl; default: download them.",
)
@_api_key_env
@_timeout
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Results dir.")
def eval_(
    url: str,
    model: str | None,
    limit: int | None,
    num_fewshot: int,
    concurrency: int,
    max_tokens: int,
    data_path: str | None,
    api_key_env: str,
    timeout: float,
    out: Path | None,
) -> None:
    """Score GSM8K (5-shot) at URL as lm-evaluation-harness's gsm8k task does."""
    from amdfleet.plan.verification import accuracy_input
    from amdfleet.verify.report import render_accuracy_table, write_accuracy
    from amdfleet.verify.run import first_model, run_accuracy

    spec = accuracy_input(
        _validated(
            AccuracySpec,
            num_fewshot=num_fewshot,
            limit=limit,
            data_path=data_path,
            concurrency=concurrency,
            max_tokens=max_tokens,
        )
    )
    api_key = _api_key(api_key_env)

    async def main(stop: asyncio.Event) -> AccuracyResult:
        served = model or await first_model(url, api_key)
        click.echo(
            f"local-completions (model={served},base_url={url}), limit: {limit}, "
            f"num_fewshot: {num_fewshot}, concurrency: {concurrency}"
        )
        return await run_accuracy(
            url,
            spec,
            model=served,
            api_key=api_key,
            timeout=timeout,
            stop=stop,
            progress=_ProgressBar(),
        )

    result, interrupted = _run(main)
    click.echo(render_accuracy_table(result))
    if out is not None:
        for path in write_accuracy(result, out):
            click.echo(f"wrote {path}")
    _exit_if_interrupted(interrupted or result.interrupted)


@click.command()
@click.argument("stack")
@click.option("--url", required=True, help="Base URL of the deployed endpoint.")
@_model
@click.option("--tokenizer", help="Tokenizer for random/ShareGPT scenarios; default: the model.")
@_api_key_env
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory; default: out/verify-<stack>-<time>.",
)
def verify(
    stack: str,
    url: str,
    model: str | None,
    tokenizer: str | None,
    api_key_env: str,
    out: Path | None,
) -> None:
    """Run STACK's verification spec against --url; exit 0 only if it passes.

    Writes verification.json, verification.md, each benchmark's JSON, GSM8K samples and
    (for sweeps) plots into the output directory.
    """
    from amdfleet.plan import plan
    from amdfleet.plan.verification import verification_input
    from amdfleet.verify.report import (
        render_accuracy_table,
        render_benchmark_table,
        render_parity_table,
        render_verdict_table,
    )
    from amdfleet.verify.run import verify_endpoint

    loaded = load_stack_file(stack)
    section = loaded.spec.verification
    if section.parity is not None:
        # As planned: the reference's path resolved, and the dtype it compares in.
        spec = plan(loaded.spec).verification.input
    else:
        spec = verification_input(section, None)
    if not spec.enabled:
        click.echo(f"verification is disabled for stack {loaded.spec.name}")
        return
    out_dir = out or Path("out") / f"verify-{loaded.spec.name}-{datetime.now():%Y%m%d-%H%M%S}"
    api_key = _api_key(api_key_env)

    async def main(stop: asyncio.Event) -> VerificationResult:
        return await verify_endpoint(
            spec,
            base_url=url,
            model=model,
            api_key=api_key,
            tokenizer=tokenizer,
            out_dir=out_dir,
            stop=stop,
            progress=_ProgressBar(),
            on_run=lambda run: click.echo(render_benchmark_table(run)),
        )

    result, interrupted = _run(main)
    if result.parity is not None:
        click.echo(render_parity_table(result.parity))
    if result.stopped:
        click.echo(f"stopped: {result.stopped}")
    if result.accuracy is not None:
        click.echo(render_accuracy_table(result.accuracy))
    table = render_verdict_table(result)
    click.echo(table)
    click.echo(f"results in {out_dir}")
    _exit_if_interrupted(interrupted or result.interrupted)
    if not result.passed:
        raise VerificationFailed(result.failures())


_DTYPES = click.Choice(["bfloat16", "float16", "float32"])


@click.group()
def parity() -> None:
    """Output parity: record a reference from a known-good endpoint, or check one."""


@parity.command("check")
@click.argument("url")
@click.option(
    "--reference",
    "reference_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The reference file.",
)
@click.option("--dtype", type=_DTYPES, required=True, help="The dtype the endpoint serves.")
@click.option("--tokens", type=int, default=16, show_default=True, help="Tokens compared.")
@click.option(
    "--min-match",
    type=float,
    default=1.0,
    show_default=True,
    help="Share of prompts that must match.",
)
@_model
@_api_key_env
@_timeout
def parity_check(
    url: str,
    reference_path: Path,
    dtype: str,
    tokens: int,
    min_match: float,
    model: str | None,
    api_key_env: str,
    timeout: float,
) -> None:
    """Compare URL's greedy continuations of the parity prompts with --reference; exit 0
    only if at least --min-match of the prompts match over their first --tokens tokens."""
    from amdfleet.config import ParitySpec
    from amdfleet.plan.verification import parity_input
    from amdfleet.verify.reference import load_reference
    from amdfleet.verify.report import render_parity_table
    from amdfleet.verify.run import check_parity, first_model

    validated = _validated(
        ParitySpec, reference=str(reference_path), dtype=dtype, tokens=tokens, min_match=min_match
    )
    spec = parity_input(validated, reference=validated.reference, dtype=validated.dtype)
    reference = load_reference(spec)
    api_key = _api_key(api_key_env)

    async def main(stop: asyncio.Event) -> ParityResult:
        served = model or await first_model(url, api_key)
        return await check_parity(
            url, spec, reference, model=served, api_key=api_key, timeout=timeout, stop=stop
        )

    result, interrupted = _run(main)
    click.echo(render_parity_table(result))
    _exit_if_interrupted(interrupted or result.interrupted)
    if result.share < min_match:
        failure = Finding.threshold("parity/match_share", f">= {min_match:g}", f"{result.share:g}")
        raise VerificationFailed([failure])


@parity.command("record")
@click.argument("url")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the reference (e.g. stacks/references/<stack>.json).",
)
@click.option("--dtype", type=_DTYPES, required=True, help="The dtype the endpoint serves.")
@click.option("--model-id", required=True, help="The model the endpoint serves (hub id).")
@click.option("--revision", required=True, help="Its revision (hub commit).")
@click.option(
    "--engine",
    "engine_label",
    required=True,
    help="What served it, e.g. 'vllm 0.32.0, vllm/vllm-openai-rocm@sha256:…, 8x MI300X'.",
)
@click.option(
    "--eos-token-id",
    type=int,
    multiple=True,
    help="End-of-sequence token id(s), trimmed from continuations (repeat).",
)
@_model
@_api_key_env
@_timeout
def parity_record(
    url: str,
    out: Path,
    dtype: str,
    model_id: str,
    revision: str,
    engine_label: str,
    eos_token_id: tuple[int, ...],
    model: str | None,
    api_key_env: str,
    timeout: float,
) -> None:
    """Record URL's greedy continuations of the parity prompts as a reference, from a
    deployment known to be good: the next image or engine bump is compared with it."""
    from amdfleet.verify.client import EndpointClient
    from amdfleet.verify.parity import record_reference
    from amdfleet.verify.run import first_model

    api_key = _api_key(api_key_env)

    async def main(_stop: asyncio.Event) -> dict[str, Any]:
        served = model or await first_model(url, api_key)
        async with EndpointClient(url, api_key=api_key, concurrency=1, timeout=timeout) as c:
            return await record_reference(
                c,
                model=served,
                dtype=dtype,
                model_id=model_id,
                revision=revision,
                recorded_by=engine_label,
                eos_token_ids=eos_token_id,
            )

    document, interrupted = _run(main)
    _exit_if_interrupted(interrupted)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    click.echo(f"wrote {out}: {len(document['prompts'])} prompts, {dtype}")


COMMANDS: list[click.Command] = [bench, eval_, verify, parity]


class _ProgressBar:
    """A click progress bar per phase, on stderr (drawn only on a terminal)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, label: str, total: int) -> None:
        click.echo(f"{label}: sending {total} requests", err=True)
        self._bar = click.progressbar(length=total, label=label, file=sys.stderr)
        self._bar.__enter__()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _run(main: Callable[[asyncio.Event], Awaitable[_T]]) -> tuple[_T, bool]:
    # SIGINT sets the stop event instead of raising KeyboardInterrupt, so the run can
    # cancel what is in flight and still return (and write) what completed.
    async def runner() -> tuple[_T, bool]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            return await main(stop), stop.is_set()
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(runner())


def _exit_if_interrupted(interrupted: bool) -> None:
    if interrupted:
        click.echo("interrupted: partial results kept", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _api_key(env_name: str) -> str | None:
    return os.environ.get(env_name) or None


def _sweep(
    common: dict[str, Any], concurrencies: Sequence[int], rates: Sequence[float | None]
) -> list[ScenarioInput]:
    from amdfleet.plan.verification import scenario_input

    caps: Sequence[int | None] = concurrencies or [None]
    points = [(c, r) for c in caps for r in (rates or [None])]
    return [
        scenario_input(
            _validated(
                BenchmarkScenario,
                name=_point_name(c, r),
                max_concurrency=c,
                request_rate=r,
                **common,
            )
        )
        for c, r in points
    ]


def _point_name(concurrency: int | None, rate: float | None) -> str:
    parts = []
    if concurrency is not None:
        parts.append(f"c{concurrency}")
    if rate is not None:
        parts.append("r" + f"{rate:g}".replace(".", "p"))
    return "-".join(parts) or "unbounded"


def _rate(text: str) -> float | None:
    try:
        rate = float(text)
    except ValueError as e:
        raise click.BadParameter(
            f"{text!r} is not a number or 'inf'", param_hint="--request-rate"
        ) from e
    if rate <= 0 or math.isnan(rate):
        raise click.BadParameter("must be > 0", param_hint="--request-rate")
    return None if math.isinf(rate) else rate


def _percentiles(text: str) -> list[float]:
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise click.BadParameter(
            f"{text!r}: use numbers like 90,95,99", param_hint="--percentiles"
        ) from e
    if not values or any(not 0 < p <= 100 for p in values):
        raise click.BadParameter("percentiles must be in (0, 100]", param_hint="--percentiles")
    return values


def _goodput(values: Sequence[str]) -> dict[str, float] | None:
    pairs = [p for v in values for p in v.replace(",", " ").split()]
    try:
        return parse_goodput(pairs) or None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--goodput") from e


def _validated(model: type[_M], **values: Any) -> _M:
    try:
        return model(**values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'options'}: {err['msg']}"
            for err in e.errors()
        )
        raise click.UsageError(problems) from e
