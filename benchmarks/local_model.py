"""What the ``local`` stack's model costs and what its gates see: vLLM's CPU build serving
SmolLM2-135M-Instruct (scripts/build-smollm2) in each configuration worth comparing.

For each configuration — float32 compiled (vLLM's default), float32 eager (what the local
stacks run: ``--enforce-eager``), bfloat16 eager, and float32 eager on a checkpoint copy
with one MLP projection zeroed — it starts ``vllm serve`` and records:

- seconds from start to ``/health`` answering;
- the output-parity share against transformers' float32 reference (``amdfleet parity
  check``'s code), and how long the check took;
- output throughput and p99 TTFT of the local stack's benchmark scenario (128 in, 64 out,
  32 prompts, concurrency 8);
- the GSM8K flexible-extract score over the first 8 problems (the local stack's smoke
  test), and how long it took.

    .venv/bin/python benchmarks/local_model.py

writes ``benchmarks/results/<date>-local-model.md`` (``--out`` to choose) and prints it.
Needs scripts/setup (the vLLM CPU build, SmolLM2, GSM8K). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from amdfleet.config import AccuracySpec, BenchmarkScenario, ParitySpec  # noqa: E402
from amdfleet.verify.client import EndpointClient  # noqa: E402
from amdfleet.verify.gsm8k import run_gsm8k  # noqa: E402
from amdfleet.verify.parity import ParityReference  # noqa: E402
from amdfleet.verify.run import check_parity, run_scenarios  # noqa: E402
from tests.e2e.vllm_server import SMOLLM2, running_vllm, zeroed_copy  # noqa: E402

REFERENCE = SMOLLM2 / "parity-reference.json"
ZEROED = "model.layers.12.mlp.down_proj.weight"
GSM8K = Path("/var/lib/amdfleet/datasets/gsm8k")
SCENARIO = BenchmarkScenario(
    name="c8", input_len=128, output_len=64, num_prompts=32, max_concurrency=8
)
CONFIGS = (
    ("float32, compiled", "intact", "float32", ()),
    ("float32, eager (the local stacks)", "intact", "float32", ("--enforce-eager",)),
    ("bfloat16, eager", "intact", "bfloat16", ("--enforce-eager",)),
    ("float32, eager, one MLP zeroed", "zeroed", "float32", ("--enforce-eager",)),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or REPO / f"benchmarks/results/{date.today()}-local-model.md"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        zeroed = zeroed_copy(SMOLLM2, Path(tmp) / "zeroed", ZEROED)
        for label, which, dtype, extra in CONFIGS:
            model = SMOLLM2 if which == "intact" else zeroed
            work = Path(tempfile.mkdtemp(dir=tmp))
            started = time.monotonic()
            with running_vllm(work, model=model, dtype=dtype, extra=extra) as server:
                ready = time.monotonic() - started
                rows.append((label, ready, *asyncio.run(_measure(server))))
                print(rows[-1], flush=True)
    text = _report(rows)
    out.write_text(text)
    print(text)
    return 0


async def _measure(server) -> tuple[float, float, float, float, float, float]:  # type: ignore[no-untyped-def]
    spec = ParitySpec(reference=str(REFERENCE), dtype="float32", min_match=0.75)
    t0 = time.monotonic()
    parity = await check_parity(
        server.url,
        spec,
        ParityReference.load(REFERENCE),
        model=server.model,
        api_key=server.api_key,
    )
    parity_s = time.monotonic() - t0
    (run,) = await run_scenarios(
        server.url, (SCENARIO,), model=server.model, api_key=server.api_key, tokenizer=str(SMOLLM2)
    )
    p99 = run.metrics.latency["ttft"].percentile(99.0)
    t0 = time.monotonic()
    accuracy = AccuracySpec(limit=8, concurrency=8, max_tokens=64, data_path=str(GSM8K))
    async with EndpointClient(server.url, api_key=server.api_key, concurrency=8) as client:
        scored = await run_gsm8k(client, accuracy, model=server.model)
    gsm8k_s = time.monotonic() - t0
    return (
        parity.share,
        parity_s,
        run.metrics.output_throughput,
        p99,
        scored.flexible_extract.value,
        gsm8k_s,
    )


def _report(rows: list[tuple]) -> str:  # type: ignore[type-arg]
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0]
    bf16 = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()]
    cpus = Path("/proc/cpuinfo").read_text().count("\nprocessor") + 1
    noted = ", ".join(bf16) or "none of avx512f/avx512_bf16/amx_bf16"
    lines = [
        f"# SmolLM2-135M-Instruct on vLLM's CPU build — {date.today()}",
        "",
        f"Machine: {platform.node()}, {platform.machine()}, {cpus} CPUs; "
        f"CPU flags of note: {noted}.",
        "Produced by `benchmarks/local_model.py`. Parity is against transformers' float32 "
        "reference (8 prompts, 16 tokens); the benchmark is the local stack's scenario "
        "(128 in / 64 out, 32 prompts, concurrency 8); GSM8K is the first 8 problems, 5-shot.",
        "",
        "| configuration | ready (s) | parity share | parity (s) | output tok/s | p99 TTFT (ms) "
        "| GSM8K flexible | GSM8K (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, ready, share, parity_s, tps, p99, score, gsm8k_s in rows:
        lines.append(
            f"| {label} | {ready:.0f} | {share:.3f} | {parity_s:.1f} | {tps:.0f} | {p99:.0f} "
            f"| {score:.3f} | {gsm8k_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
