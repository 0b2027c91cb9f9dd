"""The dtype the engine computes in: ``serving.dtype`` resolved by the planner, rendered
as ``--dtype``, carried to preflight (which judges it against the host's CPU flags), and
counted by the memory plan."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from amdfleet.config import STACKS_DIR, parse_stack
from amdfleet.plan import plan


def sections(stack: str, **serving: Any) -> dict[str, Any]:
    document = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    found = {key.removeprefix("amdfleet:"): value for key, value in document.items()}
    found["serving"] = {**found.get("serving", {}), **serving}
    return found


def dtype_flag(argv: tuple[str, ...] | list[str]) -> str | None:
    words = list(argv)
    return words[words.index("--dtype") + 1] if "--dtype" in words else None


def test_auto_on_a_cpu_is_float32_and_preflight_knows_it() -> None:
    resolved = plan(parse_stack("local", sections("local")))
    assert resolved.serving.dtype == "float32"
    assert dtype_flag(resolved.nodes[0].argv) == "float32"
    assert resolved.nodes[0].requirement.cpu_dtype == "float32"
    assert resolved.memory.kv_dtype == "fp32"


def test_an_explicit_bfloat16_on_a_cpu_goes_to_preflight() -> None:
    resolved = plan(parse_stack("local", sections("local", dtype="bfloat16")))
    assert dtype_flag(resolved.nodes[0].argv) == "bfloat16"
    assert resolved.nodes[0].requirement.cpu_dtype == "bfloat16"


def test_float32_holds_a_16_bit_checkpoint_in_twice_the_bytes() -> None:
    wide = plan(parse_stack("local", sections("local")))
    narrow = plan(parse_stack("local", sections("local", dtype="bfloat16")))
    assert wide.memory.weights_gib == pytest.approx(2 * narrow.memory.weights_gib, rel=0.05)


@pytest.mark.parametrize("stack", ["mi355x-llama70b", "mi300x-llama405b-sglang"])
def test_auto_on_a_gpu_leaves_the_checkpoint_dtype(stack: str) -> None:
    resolved = plan(parse_stack(stack, sections(stack)))
    assert resolved.serving.dtype is None
    assert all(dtype_flag(node.argv) is None for node in resolved.nodes)
    assert resolved.nodes[0].requirement.cpu_dtype is None


@pytest.mark.parametrize("stack", ["mi355x-llama70b", "mi300x-llama405b-sglang"])
def test_an_explicit_dtype_on_a_gpu_is_rendered(stack: str) -> None:
    resolved = plan(parse_stack(stack, sections(stack, dtype="bfloat16")))
    assert all(dtype_flag(node.argv) == "bfloat16" for node in resolved.nodes)
