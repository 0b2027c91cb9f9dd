"""The committed ``local`` stack (vLLM's CPU build serving the tiny Llama) as program tests
move it onto lab hosts: its config, the shared compile caches, and a small verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k"
CACHE = "/var/lib/amdfleet/cache"


def local_config() -> dict[str, Any]:
    """``stacks/Pulumi.local.yaml``'s config (full keys, e.g. ``amdfleet:engine``)."""
    document = yaml.safe_load((ROOT / "stacks/Pulumi.local.yaml").read_text())
    return dict(document["config"])


def compile_caches() -> dict[str, str]:
    """vLLM's and torch inductor's caches on a path every lab host shares, so an engine
    on a lab host starts with the compiled graphs a previous test left."""
    return {"VLLM_CACHE_ROOT": f"{CACHE}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{CACHE}/inductor"}


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
