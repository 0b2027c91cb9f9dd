"""Serving knobs and engine environment: the stack's values over the seeds' recipes.

A recipe (:data:`amdfleet.catalog.engines.RECIPES`) gives flags, environment and typed
defaults for an (engine, arch, precision); the stack's own values win over it. The
recipes that apply are looked up once (:attr:`~amdfleet.plan.checkpoint.Resolved.recipes`).
"""

from __future__ import annotations

from typing import Any

from amdfleet.config import StackSpec
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.admission import Load
from amdfleet.plan.checkpoint import Resolved
from amdfleet.plan.models import REMOTE_ROOT, ServingPlan

# vLLM's CPU backend sizes its KV cache from this variable (GiB); 4 is vLLM's default.
CPU_KV_SPACE_VAR = "VLLM_CPU_KVCACHE_SPACE"
_CPU_KV_SPACE_DEFAULT = "4"


def serving_plan(resolved: Resolved, load: Load | None) -> tuple[ServingPlan, list[Finding]]:
    """The resolved serving knobs, and the issues with the stack's own values."""
    spec, acc, arch = resolved.spec, resolved.accelerator, resolved.model.arch
    issues: list[Finding] = []
    defaults = _recipe_defaults(resolved)
    max_len = spec.serving.max_model_len or arch.max_context
    if max_len > arch.max_context:
        issues.append(
            config_issue(
                "serving.max_model_len",
                f"{max_len} exceeds the model's context of {arch.max_context} tokens",
                f"use at most {arch.max_context}",
            )
        )
    kv: str = spec.serving.kv_cache_dtype
    if kv == "auto":
        kv = str(defaults.get("kv_cache_dtype", "auto"))
    if kv == "fp8" and not acc.fp8:
        issues.append(
            config_issue(
                "serving.kv_cache_dtype",
                f"an fp8 KV cache is not supported on {acc.id}",
                "use kv_cache_dtype: auto",
            )
        )
    batched = spec.serving.max_num_batched_tokens or defaults.get("max_num_batched_tokens")
    util = spec.serving.gpu_memory_utilization
    if "gpu_memory_utilization" not in spec.serving.model_fields_set:
        util = float(defaults.get("gpu_memory_utilization", util))
    cpu = acc.arch == "cpu"
    dtype, dtype_issues = serving_dtype(resolved)
    issues += dtype_issues
    serving = ServingPlan(
        host=spec.serving.host,
        port=spec.serving.port,
        max_model_len=max_len,
        max_num_seqs=spec.serving.max_num_seqs,
        max_num_batched_tokens=int(batched) if batched else None,
        kv_cache_dtype=kv,
        gpu_memory_utilization=None if cpu else util,
        cpu_kv_cache_gib=_cpu_kv_space(resolved) if cpu else None,
        api_key_secret=spec.serving.api_key_secret,
        min_full_context_seqs=spec.serving.min_full_context_seqs,
        admit_requests=load.requests if load else 0,
        dtype=dtype,
    )
    return serving, issues


# TGI's --dtype takes only these (launcher/src/main.rs, enum Dtype at the pinned commit).
_TGI_DTYPES = ("float16", "bfloat16")


def serving_dtype(resolved: Resolved) -> tuple[str | None, list[Finding]]:
    """The ``--dtype`` the engine gets: ``serving.dtype``, with ``auto`` resolved.

    On a CPU, ``auto`` is float32: the one dtype every CPU serves correctly (vLLM's
    bfloat16 CPU kernels need AVX-512 BF16; measured here, a CPU without it serves
    garbage in bfloat16). Whether an explicit bfloat16 suits the hosts is a host fact,
    checked when the hosts are probed (preflight's cpu_dtype check). On a GPU, ``auto``
    renders no flag: the engine takes the checkpoint's dtype.
    """
    spec = resolved.spec
    wanted = spec.serving.dtype
    if wanted == "auto":
        return ("float32" if resolved.accelerator.arch == "cpu" else None), []
    if spec.engine.name == "tgi" and wanted not in _TGI_DTYPES:
        issue = config_issue(
            "serving.dtype",
            f"TGI does not serve {wanted}",
            f"use one of {', '.join(_TGI_DTYPES)}, or auto",
        )
        return wanted, [issue]
    return wanted, []


def engine_env(resolved: Resolved) -> dict[str, str]:
    """The environment every node's engine gets (before per-node network variables)."""
    spec = resolved.spec
    env: dict[str, str] = {}
    for recipe in resolved.recipes:
        env.update(recipe.env)
    if spec.engine.runtime == "process":
        env["HF_HOME"] = spec.weights.cache_dir
        env.update(resolved.engine.process_env(remote_dir(spec)))
    else:
        env["HF_HOME"] = spec.weights.container_dir
    # Weights are staged before the engine starts, so it never needs the hub.
    env["HF_HUB_OFFLINE"] = "1"
    env.update(spec.engine.extra_env)
    return env


def remote_dir(spec: StackSpec) -> str:
    """The stack's directory on every host."""
    return f"{REMOTE_ROOT}/{spec.name}"


def _recipe_defaults(resolved: Resolved) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for recipe in resolved.recipes:
        defaults.update(recipe.defaults)
    return defaults


def _cpu_kv_space(resolved: Resolved) -> int:
    return int(engine_env(resolved).get(CPU_KV_SPACE_VAR, _CPU_KV_SPACE_DEFAULT))
