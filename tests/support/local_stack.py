"""The committed ``local`` stack (vLLM's CPU build serving SmolLM2-135M-Instruct) as program
tests move it onto lab hosts: its config, the tiny random Llama for tests that need the
smallest model, the shared compile caches, and a small verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.models import TINY_ARCHITECTURE

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k"
CACHE = "/var/lib/amdfleet/cache"


def local_config() -> dict[str, Any]:
    """``stacks/Pulumi.local.yaml``'s config (full keys, e.g. ``amdfleet:engine``)."""
    document = yaml.safe_load((ROOT / "stacks/Pulumi.local.yaml").read_text())
    return dict(document["config"])


TINY_LLAMA = "/var/lib/amdfleet/models/tiny-llama"


def with_tiny_llama(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` serving the tiny random Llama (scripts/build-tiny-llama) instead of the
    stack's SmolLM2: for tests about deployment mechanics (hosts, clusters, clouds, repair),
    where the model's answers do not matter and a second-scale engine start does. Its
    verification must then carry no parity check (random weights have no reference)."""
    config["amdfleet:model"] = {
        "id": "tiny-llama",
        "checkpoint": TINY_LLAMA,
        "served_name": "tiny-llama",
        "precision": "bf16",
        "architecture": TINY_ARCHITECTURE,
    }
    config["amdfleet:weights"] = {**config["amdfleet:weights"], "local_path": TINY_LLAMA}
    return config


def compile_caches() -> dict[str, str]:
    """vLLM's and torch inductor's caches on a path every lab host shares, so an engine
    on a lab host starts with the compiled graphs a previous test left."""
    return {"VLLM_CACHE_ROOT": f"{CACHE}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{CACHE}/inductor"}


def quick_verification(verification: dict[str, Any]) -> dict[str, Any]:
    """The ``local`` stack's ``verification`` section cut to what tests of the deployment
    path need: its output-parity gate as it is, one four-request benchmark, no GSM8K (a
    whole verification is ``test_local_stack``'s)."""
    quick = {key: value for key, value in verification.items() if key != "accuracy"}
    quick["scenarios"] = [
        {"name": "c2", "input_len": 32, "output_len": 16, "num_prompts": 4, "max_concurrency": 2}
    ]
    quick["thresholds"] = {"min_success_rate": 1.0}
    return quick


def small_verification() -> dict[str, Any]:
    """A verification that still runs the benchmark and the GSM8K scorer end to end, in
    seconds on the tiny model."""
    scenario = {
        "name": "c4",
        "input_len": 64,
        "output_len": 32,
        "num_prompts": 16,
        "max_concurrency": 4,
    }
    return {
        "scenarios": [scenario],
        "accuracy": {"limit": 8, "concurrency": 4, "max_tokens": 32, "data_path": str(GSM8K)},
        "thresholds": {"min_success_rate": 1.0, "min_output_throughput": 2.0},
    }


def assert_answers_paris(endpoint: str, api_key: str, model: str) -> None:
    """The endpoint completes "The capital of France is" with Paris (SmolLM2, greedy),
    with ``api_key``: what a deployment of the ``local`` stack must serve."""
    reply = httpx.post(
        f"{endpoint}/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "model": model,
            "prompt": "The capital of France is",
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert "Paris" in reply.json()["choices"][0]["text"], reply.text
