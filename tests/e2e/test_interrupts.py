"""A server killed mid-run, and Ctrl-C: real processes, real signals (no vLLM needed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from amdfleet.config import BenchmarkScenario
from amdfleet.plan.verification import scenario_input
from amdfleet.verify.bench import BenchmarkRun, run_scenario
from amdfleet.verify.client import EndpointClient, RequestOutput
from amdfleet.verify.datasets import BenchRequest
from tests.e2e.vllm_server import REPO
from tests.support.openai_server import OpenAIServer, Script

STUB = REPO / "tests" / "support" / "openai_server.py"


def test_server_killed_mid_run_fails_the_rest_without_crashing() -> None:
    server = subprocess.Popen(
        [sys.executable, str(STUB), "--token-delay", "0.01"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split()[1]
        run = asyncio.run(_bench_killing(f"http://127.0.0.1:{port}", server, after=4))
    finally:
        server.kill()
        server.wait(timeout=10)
    assert server.returncode == -signal.SIGKILL
    assert run.metrics.completed >= 4 and run.metrics.failed > 0
    assert run.metrics.completed + run.metrics.failed == 30
    reasons = set(run.failure_reasons())
    # in flight when killed: the stream is cut; sent afterwards: nobody listens
    assert reasons <= {"connection lost", "connection failed"}, reasons
    assert "connection failed" in reasons


async def _bench_killing(url: str, server: subprocess.Popen[str], after: int) -> BenchmarkRun:
    done: list[RequestOutput] = []

    def on_done(out: RequestOutput) -> None:
        done.append(out)
        if len(done) == after:
            server.send_signal(signal.SIGKILL)

    scenario = scenario_input(
        BenchmarkScenario(name="kill", num_prompts=30, output_len=10, max_concurrency=3)
    )
    requests = [BenchRequest(f"p{i}", 2, 10) for i in range(30)]
    async with EndpointClient(url, concurrency=3, timeout=20) as client:
        return await run_scenario(client, scenario, requests, model="stub-model", on_done=on_done)


def test_ctrl_c_keeps_partial_results_and_exits_130(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a prompt\n")
    out = tmp_path / "out"
    with OpenAIServer(Script(token_delay=0.01)) as server:
        bench = subprocess.Popen(
            [
                sys.executable, "-c", "from amdfleet.cli import main; main()",
                "bench", server.url, "--dataset", "prompts", "--dataset-path", str(prompts),
                "--num-prompts", "200", "--output-len", "10", "--max-concurrency", "2",
                "--out", str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "AMDFLEET_API_KEY"},
        )  # fmt: skip
        try:
            assert server.wait_completed(5, timeout=60), "the benchmark never got going"
            bench.send_signal(signal.SIGINT)
            stdout, stderr = bench.communicate(timeout=60)
        finally:
            bench.kill()
    assert bench.returncode == 130, stdout + stderr
    assert "interrupted: partial results kept" in stderr
    data = json.loads((out / "bench-c2.json").read_text())
    assert data["interrupted"] is True
    assert 5 <= data["completed"] < 200 and data["failed"] == 0
    assert data["total_output_tokens"] == 10 * data["completed"]
