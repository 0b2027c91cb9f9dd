"""Planner memory math against the layouts the seeds report as working.

Seed 003 (SGLang's cookbook) lists the verified AMD layouts, seed 003:22-26 ("Verified
TP Configurations"): on MI300X/MI325X 405B BF16 at TP8, 405B FP8 at TP4, 70B/8B at TP1;
on MI355X 405B BF16 at TP4, 405B FP8 at TP2, 70B/8B at TP1. The planner must accept those
and reject the next smaller TP. Contexts are stated per row: 70B BF16 at the full 128k
context does not fit one MI300X (weights 131 GiB + 40 GiB of KV cache), which the planner
reports.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from amdfleet.catalog import find_model, param_counts
from amdfleet.config import load_stack_file, parse_stack
from amdfleet.errors import PlanError
from amdfleet.plan import GIB, plan
from tests.support.fleets import placeholder_hosts

MODEL = {
    "405b": "llama-3.1-405b-instruct",
    "70b": "llama-3.3-70b-instruct",
    "8b": "llama-3.1-8b-instruct",
}


def _spec(accelerator: str, model: str, precision: str, tp: int, context: int):  # type: ignore[no-untyped-def]
    return parse_stack(
        f"{accelerator}-{model}-{precision}-tp{tp}",
        {
            "fleet": {"hosts": [{"name": "h", "connection": "local"}]},
            "topology": {"accelerator": accelerator, "gpus_per_node": tp},
            "model": {"id": MODEL[model], "precision": precision},
            "parallelism": {"tp": tp},
            "serving": {"max_model_len": context},
            "weights": {"hf_token_secret": "hfToken"},
            "verification": {"enabled": False},
        },
    )


VERIFIED = [
    ("mi300x", "405b", "bf16", 8, 131072),
    ("mi300x", "405b", "fp8", 4, 131072),
    ("mi325x", "405b", "bf16", 8, 131072),
    ("mi325x", "405b", "fp8", 4, 131072),
    ("mi355x", "405b", "bf16", 4, 131072),
    ("mi355x", "405b", "fp8", 2, 131072),
    ("mi300x", "70b", "bf16", 1, 32768),
    ("mi300x", "70b", "fp8", 1, 131072),
    ("mi300x", "8b", "bf16", 1, 131072),
    ("mi355x", "70b", "bf16", 1, 131072),
    ("mi355x", "70b", "fp8", 1, 131072),
    ("mi355x", "70b", "mxfp4", 1, 131072),
    ("mi355x", "8b", "fp8", 1, 131072),
]

# the last column is the TP the hint must suggest: seed 003's verified TP for the first
# four; for 70B BF16 at the full context, 131 GiB of weights + 40 GiB of KV halve at TP2
TOO_SMALL = [
    ("mi300x", "405b", "bf16", 4, 32768, 8),
    ("mi300x", "405b", "fp8", 2, 32768, 4),
    ("mi355x", "405b", "bf16", 2, 32768, 4),
    ("mi355x", "405b", "fp8", 1, 32768, 2),
    ("mi300x", "70b", "bf16", 1, 131072, 2),
]
HBM_GB = {"mi300x": 192, "mi325x": 256, "mi355x": 288}  # AMD's data sheets
PARAMS = {"405b": 405.85e9, "70b": 70.55e9}  # Meta's model cards


@pytest.mark.parametrize(("acc", "model", "precision", "tp", "context"), VERIFIED)
def test_verified_layouts_fit(acc: str, model: str, precision: str, tp: int, context: int) -> None:
    budget = plan(_spec(acc, model, precision, tp, context)).memory
    assert budget.fits
    assert budget.kv_capacity_tokens >= context
    assert budget.weights_gib + budget.overhead_gib + budget.kv_cache_gib == pytest.approx(
        budget.usable_gib, abs=0.02
    )


@pytest.mark.parametrize(("acc", "model", "precision", "tp", "context", "suggested"), TOO_SMALL)
def test_next_smaller_layout_is_rejected(
    acc: str, model: str, precision: str, tp: int, context: int, suggested: int
) -> None:
    with pytest.raises(PlanError) as caught:
        plan(_spec(acc, model, precision, tp, context))
    issue = caught.value.issues[0]
    assert issue.subject == "parallelism"
    found = re.search(
        r"needs ([\d.]+) GiB per GPU, has ([\d.]+) \((\d+) GiB × 0\.9\) — weights ([\d.]+)",
        issue.detail,
    )
    assert found, issue.detail
    needs, has, hbm, weights = (float(x) for x in found.groups())
    assert hbm == HBM_GB[acc] and has == pytest.approx(HBM_GB[acc] * 0.9, abs=0.05)
    assert needs > has
    if precision == "bf16":  # every parameter at 2 bytes, split over the TP ranks
        assert weights == pytest.approx(PARAMS[model] * 2 / tp / GIB, abs=0.1)
    assert f"use tp={suggested} (gpus_per_node={suggested})" in issue.hint
    fitted = plan(_spec(acc, model, precision, suggested, context)).memory  # the fix works
    assert fitted.fits and fitted.kv_capacity_tokens >= context


def test_405b_fp8_weights_follow_the_arithmetic_not_seed_000() -> None:
    """Seed 000 says ~210 GB for 405B FP8 over 8 GPUs (~26 GB each); 405.9 B parameters at
    one byte (embeddings and LM head stay BF16) are ~410 GB, ~51 GB per GPU at TP8."""
    arch = find_model("llama-3.1-405b-instruct").arch  # type: ignore[union-attr]
    linear, other = param_counts(arch)
    assert linear + other == pytest.approx(405.85e9, rel=1e-3)
    budget = plan(_spec("mi325x", "405b", "fp8", 8, 32768)).memory
    assert budget.weights_gib * GIB / 1e9 == pytest.approx((linear + 2 * other) / 8 / 1e9, rel=1e-3)
    assert 50 < budget.weights_gib * GIB / 1e9 < 52


def test_kv_cache_bytes_per_token() -> None:
    """2 (K, V) × layers × KV heads per GPU × head dim × dtype bytes."""
    budget = plan(_spec("mi355x", "70b", "fp8", 1, 32768)).memory
    assert budget.kv_dtype == "fp8"  # the MI355X recipe sets --kv-cache-dtype fp8 (seed 002)
    assert budget.kv_bytes_per_token == 2 * 80 * 8 * 128 * 1
    budget = plan(_spec("mi300x", "405b", "bf16", 8, 32768)).memory
    assert budget.kv_bytes_per_token == 2 * 126 * 1 * 128 * 2


def test_suggestions_name_a_layout_that_fits() -> None:
    with pytest.raises(PlanError) as caught:
        plan(_spec("mi300x", "405b", "bf16", 4, 32768))
    assert "use tp=8" in caught.value.issues[0].hint
    plan(_spec("mi300x", "405b", "bf16", 8, 32768))  # the suggestion is itself valid


def test_mi325x_follows_its_own_memory_not_seed_003() -> None:
    """Seed 003:23 ("MI355X (256GB memory) supports lower TP values compared to
    MI300X/MI325X (192GB)") groups MI325X with MI300X at 192GB and calls MI355X 256GB;
    MI325X has 256 GB and MI355X 288 GB. By the arithmetic 405B BF16 fits TP4 on MI325X
    (189 GiB of weights in 230 GiB usable), so the planner accepts it, while seed 003's
    TP8 for MI325X stays the verified default in the stacks."""
    budget = plan(_spec("mi325x", "405b", "bf16", 4, 32768)).memory
    assert budget.fits
    assert budget.gpu_memory_gib == 256
    assert plan(_spec("mi355x", "405b", "fp8", 2, 32768)).memory.gpu_memory_gib == 288


def test_the_cpu_budget_is_the_fixed_kv_space_not_a_memory_fraction() -> None:
    """The local stack's recipe sets VLLM_CPU_KVCACHE_SPACE=1 (GiB): the plan says so
    explicitly, with no GPU memory fraction, and the budget's KV cache is that space."""
    deployment = plan(load_stack_file("local").spec)
    assert deployment.accelerator.is_cpu
    assert deployment.serving.gpu_memory_utilization is None
    assert deployment.serving.cpu_kv_cache_gib == int(deployment.head.env["VLLM_CPU_KVCACHE_SPACE"])
    assert deployment.memory.kv_cache_gib == deployment.serving.cpu_kv_cache_gib == 1
    assert "--gpu-memory-utilization" not in deployment.head.argv
    with pytest.raises(ValidationError, match="exactly one"):
        deployment.serving.model_validate(
            {**deployment.serving.model_dump(), "gpu_memory_utilization": 0.9}
        )


# --- pipeline parallel: each stage's GPUs hold that stage's layers ------------------------
#
# Hand arithmetic (BF16, 2 bytes a parameter; Llama 3 shapes from Meta's configs):
#   70B:  per layer = (q,o 2·8192·64·128 + k,v 2·8192·8·128 + MLP 3·8192·28672) · 2 B
#                     + 2 norms · 8192 · 2 B                     = 1,711,308,800 B
#         embeddings = LM head = 128256 · 8192 · 2 B             = 2,101,346,304 B
#   405B: per layer = (2·16384·128·128 + 2·16384·8·128 + 3·16384·53248) · 2 B
#                     + 2 · 16384 · 2 B                          = 6,375,407,616 B
#         embeddings = LM head = 128256 · 16384 · 2 B            = 4,202,692,608 B
#   final norm = hidden · 2 B (16,384 B for 70B), on the last stage.
# A stage holds ceil(layers / pp) layers, the embeddings if first, the LM head if last
# (vLLM) or on every stage (SGLang's Llama builds ParallelLMHead on each pp rank), all / tp.
#   70B pp2 tp1, vLLM:   40 · 1,711,308,800 + 2,101,346,304 = 70,553,698,304 B = 65.71 GiB
#                        (stage 1 adds the LM head instead, + 16,384 B of norm: 65.71)
#   70B pp2 tp1, SGLang: stage 0 = 40 layers + embeddings + LM head = 72,655,044,608 B
#                        = 67.67 GiB; stage 1 = 65.71 GiB as vLLM's
#   70B pp4 tp1, vLLM:   20 · 1,711,308,800 = 34,226,176,000 B = 31.88 GiB (middle
#                        stages); + 2,101,346,304 on the first and last = 33.83 GiB
#   70B pp4 tp1, SGLang: 33.83 on stages 1-3 (layers + LM head), 35.79 on stage 0
#   405B pp2 tp8, SGLang: (63 · 6,375,407,616 + 2 · 4,202,692,608) / 8 = 51,257,008,128 B
#                        = 47.74 GiB on stage 0; stage 1 (LM head + norm) = 47.25 GiB
#   405B pp4 tp4, vLLM:  ceil(126 / 4) = 32 layers: 32 · 6,375,407,616 / 4 = 47.50 GiB in the
#                        middle, + 4,202,692,608 / 4 = 48.48 GiB on the first and last
PP_STAGES = [
    ("vllm", "70b", 1, 2, (65.71, 65.71)),
    ("sglang", "70b", 1, 2, (67.67, 65.71)),
    ("vllm", "70b", 1, 4, (33.83, 31.88, 31.88, 33.83)),
    ("sglang", "70b", 1, 4, (35.79, 33.83, 33.83, 33.83)),
    ("sglang", "405b", 8, 2, (47.74, 47.25)),
    ("vllm", "405b", 4, 4, (48.48, 47.50, 47.50, 48.48)),
]
LAYERS = {"70b": 80, "405b": 126}
KV_HEADS, HEAD_DIM = 8, 128


def _pp_spec(engine: str, model: str, tp: int, pp: int):  # type: ignore[no-untyped-def]
    nodes = max(1, tp * pp // 8)  # 8 MI300X a node
    return parse_stack(
        f"{engine}-{model}-tp{tp}-pp{pp}",
        {
            "fleet": {"hosts": placeholder_hosts(nodes)},
            "topology": {
                "accelerator": "mi300x",
                "nodes": nodes,
                "gpus_per_node": tp * pp // nodes,
            },
            "model": {"id": MODEL[model], "precision": "bf16"},
            "engine": {"name": engine},
            "parallelism": {"tp": tp, "pp": pp},
            "serving": {"max_model_len": 8192},
            "weights": {"hf_token_secret": "hfToken"},
            "verification": {"enabled": False},
        },
    )


@pytest.mark.parametrize(("engine", "model", "tp", "pp", "weights"), PP_STAGES)
def test_each_pipeline_stage_holds_its_own_layers_and_heads(
    engine: str, model: str, tp: int, pp: int, weights: tuple[float, ...]
) -> None:
    budget = plan(_pp_spec(engine, model, tp, pp)).memory
    assert tuple(s.weights_gib for s in budget.stages) == weights
    assert [s.stage for s in budget.stages] == list(range(pp))
    # KV cache per stage: its own ceil(layers / pp) layers only, 2 (K, V) × KV heads per
    # GPU × head dim × 2 B; e.g. 70B pp2 tp1: 2 × 40 × 8 × 128 × 2 = 163,840 B per token
    layers = -(-LAYERS[model] // pp)
    assert budget.kv_bytes_per_token == 2 * layers * max(1, KV_HEADS // tp) * HEAD_DIM * 2
    usable = 192 * 0.9  # MI300X, the default gpu_memory_utilization
    for stage in budget.stages:
        assert stage.layers == layers
        kv = usable - stage.weights_gib - budget.overhead_gib
        assert stage.kv_cache_gib == pytest.approx(kv, abs=0.02)
        assert stage.kv_capacity_tokens == pytest.approx(
            kv * GIB / budget.kv_bytes_per_token, rel=1e-3
        )


@pytest.mark.parametrize(("engine", "model", "tp", "pp", "weights"), PP_STAGES)
def test_the_budget_is_the_tightest_stage(
    engine: str, model: str, tp: int, pp: int, weights: tuple[float, ...]
) -> None:
    """The engine's KV pool is as large as its smallest stage allows: the headline numbers
    are those of the stage with the most weights."""
    budget = plan(_pp_spec(engine, model, tp, pp)).memory
    tightest = budget.stages[budget.stage]
    assert budget.weights_gib == tightest.weights_gib == max(weights)
    assert budget.kv_cache_gib == tightest.kv_cache_gib
    assert budget.kv_capacity_tokens == min(s.kv_capacity_tokens for s in budget.stages)


def test_one_stage_keeps_the_whole_model_and_lists_no_stages() -> None:
    """pp = 1: all 80 layers, embeddings and LM head on each GPU, as before pp stages."""
    budget = plan(_pp_spec("vllm", "70b", 2, 1)).memory
    assert budget.stages == ()
    # 80 · 1,711,308,800 + 2 · 2,101,346,304 + 16,384 = 141,107,412,992 B / 2 = 65.71 GiB
    assert budget.weights_gib == round(141_107_412_992 / 2 / GIB, 2)


def test_a_stage_that_does_not_fit_is_named() -> None:
    """405B BF16 over pp=2 × tp=1 needs ~378 GiB per GPU: the error names the stage."""
    with pytest.raises(PlanError) as caught:
        plan(_pp_spec("sglang", "405b", 1, 2))
    issue = caught.value.issues[0]
    assert issue.subject == "parallelism"
    # stage 0 holds 63 layers + embeddings + LM head: 381.89 GiB (see PP_STAGES' arithmetic)
    assert issue.detail.startswith("does not fit on pipeline stage 0: needs")
    assert "weights 381.9" in issue.detail
