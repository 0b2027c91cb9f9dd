"""The generated-tokens counter the completion watchdog reads, on a real vLLM.

Real: vLLM 0.32.0's CPU build serving the tiny Llama with an API key (the session's
``vllm_server``), amdfleet's :func:`~amdfleet.remote.engine.counter_command` run by this
machine's sh, and a real completion. It checks what the watchdog relies on
(:attr:`Engine.tokens_counter <amdfleet.engines.base.Engine.tokens_counter>`): the counter
vLLM's engine class names is served at ``/metrics`` without the key, and grows by the
tokens vLLM generates.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from amdfleet.engines import engine, tokens_counters
from amdfleet.remote.engine import counter_command
from tests.e2e.vllm_server import VllmServer


def _counted(url: str, env: dict[str, str] | None = None) -> str:
    command = counter_command(url.rstrip("/") + "/metrics", tokens_counters(), 5)
    run = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env)
    return run.stdout.strip()


def test_vllm_serves_its_tokens_counter_without_the_key_and_it_counts_tokens(
    vllm_server: VllmServer, tmp_path: Path
) -> None:
    assert engine("vllm").tokens_counter in tokens_counters()
    plain = httpx.get(vllm_server.url.rstrip("/") + "/metrics", timeout=10)
    assert plain.status_code == 200  # no Authorization header
    assert f"{engine('vllm').tokens_counter}{{" in plain.text
    before = int(_counted(vllm_server.url))
    answer = httpx.post(
        vllm_server.url.rstrip("/") + "/v1/completions",
        headers={"Authorization": f"Bearer {vllm_server.api_key}"},
        json={"model": vllm_server.model, "prompt": "Hello", "max_tokens": 5, "min_tokens": 5},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    generated = answer.json()["usage"]["completion_tokens"]
    assert generated == 5
    after = _counted(vllm_server.url)
    assert int(after) - before >= generated
    # A host without curl: python3 reads the same sum.
    assert _counted(vllm_server.url, _without_curl(tmp_path)) == after


def _without_curl(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds python3 only (sh is run by its full path)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    return {**os.environ, "PATH": str(bin_dir)}


def test_no_counter_and_no_answer_print_nothing(vllm_server: VllmServer) -> None:
    """A counter the engine does not serve, and a port nothing listens on: no reading."""
    metrics = vllm_server.url.rstrip("/") + "/metrics"
    absent = counter_command(metrics, ("sglang:generation_tokens_total",), 5)
    assert subprocess.run(["sh", "-c", absent], capture_output=True, text=True).stdout == ""
    closed = counter_command("http://127.0.0.1:9/metrics", tokens_counters(), 2)
    assert subprocess.run(["sh", "-c", closed], capture_output=True, text=True).stdout == ""
