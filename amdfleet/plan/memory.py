"""Per-GPU memory math, and what to change when a layout does not fit.

Per GPU, in GiB = 2**30 bytes::

    weights  = (linear params × bytes(precision) + other params × 2) / tp      (pp = 1)
    kv/token = 2 (K and V) × ceil(layers / pp) × ceil(kv_heads / tp) × head_dim × bytes(kv)
    overhead = runtime (HIP context, RCCL buffers) + activation peak for one scheduler
               step of max_num_batched_tokens + sampler logits
    usable   = GPU memory × gpu_memory_utilization
    KV cache = usable − weights − overhead, which must hold
               max_model_len × min_full_context_seqs tokens

With pp > 1 each stage's GPUs hold only that stage's layers, so the stages differ::

    layer    = (all weights − embeddings − LM head − final norm) / layers
    stage s  = (ceil(layers / pp) × layer
                + embeddings                  if s is the first stage
                + LM head                     if s is the last stage, or on every stage
                                              when the engine builds it there (SGLang)
                + final norm                  if s is the last stage) / tp

where embeddings and LM head are vocab × hidden BF16 parameters each. Each stage's KV
cache holds its own layers only (the kv/token above). Every stage is budgeted at
ceil(layers / pp) layers: uneven splits differ by engine (vLLM gives the extra layers to
the middle stages, SGLang to the last), and the bound holds for both. The overhead is
counted on every stage (only the last samples, so the logits term is an upper bound
elsewhere). The engine's KV capacity is the smallest stage's, so the budget reports the
tightest stage and lists each.

"Linear" parameters are the attention and MLP projections that FP8 and MXFP4
checkpoints quantize; embeddings, LM head and norms stay BF16. Seed 000 quotes ~210 GB
for Llama 3.1 405B in FP8: 405.9 B parameters at one byte are ~406 GB (~410 GB with
the BF16 embeddings), so the planner follows the arithmetic, not the seed's figure.

On a CPU the KV cache is a fixed size (``VLLM_CPU_KVCACHE_SPACE``), not a fraction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from amdfleet import catalog
from amdfleet.catalog.gpus import Accelerator
from amdfleet.config import ModelArchitecture
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.checkpoint import weight_bytes
from amdfleet.plan.models import (
    GIB,
    MemoryBudget,
    ModelPlan,
    ParallelismPlan,
    ServingPlan,
    StageMemory,
)

DEFAULT_MAX_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256
_RUNTIME_GIB = 2.0
_RUNTIME_GIB_MULTI_GPU = 1.0
_CPU_OVERHEAD_GIB = 0.5
_MIN_SUGGESTED_LEN = 2048


def memory_budget(
    acc: Accelerator, model: ModelPlan, serving: ServingPlan, parallelism: ParallelismPlan
) -> MemoryBudget:
    """The per-GPU memory budget of serving ``model`` split tp × pp on ``acc``: that of
    the tightest pipeline stage, with every stage listed when pp > 1."""
    arch = model.architecture
    tp, pp = parallelism.tp, parallelism.pp
    layers = math.ceil(arch.layers / pp)
    kv_dtype, kv_bytes = _kv_dtype(serving)
    # A 16-bit checkpoint computed in float32 is held in float32: twice its bytes.
    upcast = 2 if serving.dtype == "float32" else 1
    per_token = 2 * layers * math.ceil(arch.kv_heads / tp) * arch.head_dim * kv_bytes
    if serving.cpu_kv_cache_gib is not None:  # CPU: a fixed-size KV cache, no fraction
        utilization, overhead = 1.0, _CPU_OVERHEAD_GIB
    else:
        assert serving.gpu_memory_utilization is not None  # ServingPlan: one or the other
        utilization = serving.gpu_memory_utilization
        overhead = _overhead_gib(arch, serving, tp, pp)
    stages = []
    for stage in range(pp):
        weights = upcast * stage_weight_bytes(model, parallelism, stage) / tp / GIB
        if serving.cpu_kv_cache_gib is not None:
            kv_gib = float(serving.cpu_kv_cache_gib)
        else:
            kv_gib = acc.memory_gib * utilization - weights - overhead
        stages.append(_Stage(max(0, int(kv_gib * GIB // per_token)), stage, weights, kv_gib))
    tight = min(stages)
    return MemoryBudget(
        gpu_memory_gib=acc.memory_gib,
        utilization=utilization,
        usable_gib=round(tight.weights_gib + overhead + tight.kv_gib, 2),
        weights_gib=round(tight.weights_gib, 2),
        overhead_gib=round(overhead, 2),
        kv_cache_gib=round(tight.kv_gib, 2),
        kv_dtype=kv_dtype,
        kv_bytes_per_token=per_token,
        kv_capacity_tokens=tight.capacity,
        required_kv_tokens=serving.max_model_len * serving.min_full_context_seqs,
        stage=tight.stage,
        stages=tuple(s.record(layers) for s in stages) if pp > 1 else (),
    )


def _kv_dtype(serving: ServingPlan) -> tuple[str, int]:
    """The KV cache's dtype and bytes per element: fp8 when asked, else the dtype the
    engine computes in (bf16 when that is the checkpoint's own)."""
    if serving.kv_cache_dtype == "fp8":
        return "fp8", 1
    return {"float32": ("fp32", 4), "float16": ("fp16", 2)}.get(serving.dtype or "", ("bf16", 2))


def stage_weight_bytes(model: ModelPlan, parallelism: ParallelismPlan, stage: int) -> float:
    """Bytes of weights pipeline stage ``stage`` holds in all (before the tp split)."""
    pp = parallelism.pp
    if pp == 1:
        return float(model.weight_bytes)
    arch = model.architecture
    head = arch.vocab * arch.hidden * 2  # the embeddings, or the LM head: BF16
    final_norm = arch.hidden * 2
    per_layer = (model.weight_bytes - 2 * head - final_norm) / arch.layers
    total = math.ceil(arch.layers / pp) * per_layer
    last = stage == pp - 1
    if stage == 0:
        total += head
    if last or parallelism.lm_head_every_stage:
        total += head
    if last:
        total += final_norm
    return total


def does_not_fit(
    acc: Accelerator,
    model: ModelPlan,
    serving: ServingPlan,
    parallelism: ParallelismPlan,
    budget: MemoryBudget,
) -> Finding:
    """The issue for a budget that does not fit, with the changes that would fit."""
    needed, has = budget.needed_gib, budget.usable_gib
    where = f" on pipeline stage {budget.stage}" if budget.stages else ""
    message = (
        f"does not fit{where}: needs {needed:.1f} GiB per GPU, has {has:.1f} "
        f"({acc.memory_gib:g} GiB × {budget.utilization}) — weights {budget.weights_gib:.1f}, "
        f"overhead {budget.overhead_gib:.1f}, KV cache for {budget.required_kv_tokens} tokens "
        f"{budget.required_kv_tokens * budget.kv_bytes_per_token / GIB:.1f}"
    )
    hints = _suggestions(acc, model, serving, parallelism, budget)
    return config_issue("parallelism", message, "; or ".join(hints))


def _suggestions(
    acc: Accelerator,
    model: ModelPlan,
    serving: ServingPlan,
    parallelism: ParallelismPlan,
    budget: MemoryBudget,
) -> list[str]:
    out = []
    arch = model.architecture
    for wider in (t for t in (2, 4, 8) if t > parallelism.tp and arch.heads % t == 0):
        if memory_budget(acc, model, serving, parallelism.model_copy(update={"tp": wider})).fits:
            out.append(f"use tp={wider} (gpus_per_node={wider * parallelism.dp})")
            break
    for precision in ("fp8", "mxfp4"):
        cheaper = catalog.WEIGHT_BYTES[precision] < catalog.WEIGHT_BYTES[model.precision]
        supported = acc.fp8 if precision == "fp8" else acc.mxfp4
        if not (cheaper and supported):
            continue
        lighter = model.model_copy(
            update={"precision": precision, "weight_bytes": weight_bytes(arch, precision)}
        )
        if memory_budget(acc, lighter, serving, parallelism).fits:
            out.append(f"use model.precision: {precision}")
            break
    shorter = budget.kv_capacity_tokens // serving.min_full_context_seqs // 1024 * 1024
    if shorter >= _MIN_SUGGESTED_LEN:
        out.append(f"shorten serving.max_model_len to {shorter} or less")
    return out or ["use more GPUs (higher tp or pp across more nodes)"]


class _Stage(NamedTuple):
    """A stage's numbers before rounding; ordered by KV capacity, then stage."""

    capacity: int
    stage: int
    weights_gib: float
    kv_gib: float

    def record(self, layers: int) -> StageMemory:
        return StageMemory(
            stage=self.stage,
            layers=layers,
            weights_gib=round(self.weights_gib, 2),
            kv_cache_gib=round(self.kv_gib, 2),
            kv_capacity_tokens=self.capacity,
        )


def _overhead_gib(arch: ModelArchitecture, serving: ServingPlan, tp: int, pp: int) -> float:
    tokens = serving.max_num_batched_tokens or DEFAULT_MAX_BATCHED_TOKENS
    activations = tokens * (2 * arch.hidden + 3 * arch.intermediate / tp) * 2
    logits = (serving.max_num_seqs or DEFAULT_MAX_NUM_SEQS) * arch.vocab * 4
    runtime = _RUNTIME_GIB + (_RUNTIME_GIB_MULTI_GPU if tp * pp > 1 else 0)
    return runtime + (activations + logits) / GIB
