"""The planner: a pure function from a stack spec to a deployment plan.

``plan(spec)`` checks that the layout can work (parallelism against the topology and
the model's shape, engine and hardware support, the per-GPU memory budget) and resolves
everything the renderers and providers need: the checkpoint, the image, per-node ranks
and roles, the head's address and ports, environment variables and argument lists.
It does no I/O and never talks to Pulumi; every problem found is raised together as a
:class:`~amdfleet.errors.PlanError` naming the field and a fix.

Memory math (per GPU, in GiB = 2**30 bytes)::

    weights  = (linear params × bytes(precision) + other params × 2) / (tp × pp)
    kv/token = 2 (K and V) × ceil(layers / pp) × ceil(kv_heads / tp) × head_dim × bytes(kv)
    overhead = runtime (HIP context, RCCL buffers) + activation peak for one scheduler
               step of max_num_batched_tokens + sampler logits
    usable   = GPU memory × gpu_memory_utilization
    KV cache = usable − weights − overhead, which must hold
               max_model_len × min_full_context_seqs tokens

"Linear" parameters are the attention and MLP projections that FP8 and MXFP4
checkpoints quantize; embeddings, LM head and norms stay BF16. Seed 000 quotes ~210 GB
for Llama 3.1 405B in FP8: 405.9 B parameters at one byte are ~406 GB (~410 GB with
the BF16 embeddings), so the planner follows the arithmetic, not the seed's figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from amdfleet import catalog
from amdfleet.catalog.gpus import Accelerator
from amdfleet.catalog.models import Checkpoint, ModelInfo
from amdfleet.config import HostSpec, ModelArchitecture, StackSpec
from amdfleet.errors import ConfigIssue, PlanError

GIB = 2**30
REMOTE_ROOT = "/opt/amdfleet"
DEFAULT_MAX_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256
_RUNTIME_GIB = 2.0
_RUNTIME_GIB_MULTI_GPU = 1.0
_CPU_OVERHEAD_GIB = 0.5
_BASE_STARTUP_S = 300
_LOAD_GIB_PER_S = 1.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ResolvedModel(_Frozen):
    """The model as it will be served."""

    id: str
    name: str
    checkpoint: str
    is_local_path: bool
    revision: str | None
    precision: str
    stored_precision: str
    online_quantization: bool
    served_name: str
    gated: bool
    architecture: ModelArchitecture
    weight_bytes: int
    checkpoint_bytes: int


class MemoryBudget(_Frozen):
    """Per-GPU memory budget, GiB."""

    gpu_memory_gib: float
    utilization: float
    usable_gib: float
    weights_gib: float
    overhead_gib: float
    kv_cache_gib: float
    kv_dtype: str
    kv_bytes_per_token: int
    kv_capacity_tokens: int
    required_kv_tokens: int

    @property
    def fits(self) -> bool:
        """Whether the weights, overhead and required KV cache fit."""
        return self.kv_capacity_tokens >= self.required_kv_tokens

    @property
    def needed_gib(self) -> float:
        """Memory per GPU the layout needs (weights + overhead + required KV cache)."""
        kv = self.required_kv_tokens * self.kv_bytes_per_token / GIB
        return self.weights_gib + self.overhead_gib + kv


class NodePlan(_Frozen):
    """What runs on one node."""

    rank: int
    host: str
    address: str | None
    cluster_address: str | None
    role: Literal["head", "worker"]
    serves_api: bool
    gpus: int
    env: dict[str, str]
    secret_env: dict[str, str]
    argv: tuple[str, ...]
    ray_argv: tuple[str, ...] = ()
    remote_dir: str


class ImagePlan(_Frozen):
    """Which container image the engine runs in (docker runtime)."""

    image: str | None
    build: bool
    base_image: str | None = None
    aiter_ref: str | None = None
    vllm_ref: str | None = None
    gfx_targets: tuple[str, ...] = ()
    registry: str | None = None
    source: str = ""


class ServingPlan(_Frozen):
    """Resolved serving knobs."""

    host: str
    port: int
    max_model_len: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    kv_cache_dtype: str
    gpu_memory_utilization: float | None
    api_key_secret: str | None


class DeploymentPlan(_Frozen):
    """Everything needed to render, deploy and verify a stack."""

    stack: str
    description: str
    engine: str
    runtime: str
    network: str
    ipc: str
    shm_size: str
    accelerator: str
    accelerator_name: str
    arch: str
    model: ResolvedModel
    tp: int
    pp: int
    dp: int
    backend: str
    master_port: int
    ray_port: int
    serving: ServingPlan
    memory: MemoryBudget
    nodes: tuple[NodePlan, ...]
    image: ImagePlan
    weights_cache_dir: str
    weights_local_path: str | None
    weights_hub_endpoint: str | None
    weights_timeout_s: int
    hf_token_secret: str | None
    startup_timeout_s: int
    campaign: dict[str, Any]
    ready_paths: tuple[str, ...]
    recipe_sources: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def head(self) -> NodePlan:
        """The rank-0 node, which serves the API."""
        return self.nodes[0]

    @property
    def endpoint(self) -> str:
        """Base URL of the OpenAI-compatible API (``<pending>`` before provisioning)."""
        address = self.head.address or "<pending>"
        return f"http://{address}:{self.serving.port}"

    @property
    def container_name(self) -> str:
        """Docker container name on every node."""
        return f"amdfleet-{self.stack}"


def plan(spec: StackSpec) -> DeploymentPlan:
    """Resolve ``spec`` into a :class:`DeploymentPlan`.

    Pure and deterministic. Raises :class:`PlanError` with every problem found (each
    with the field path and a hint) when the stack cannot be deployed as written.
    """
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    acc = _accelerator(spec, issues)
    info = _model_info(spec, issues)
    if acc is None or info is None:
        raise PlanError(issues, f"stack {spec.name}")
    model = _resolve_model(spec, acc, info, issues)
    _check_parallelism(spec, info.arch, issues, warnings)
    _check_engine(spec, acc, issues)
    serving = _serving(spec, acc, info.arch, model, issues)
    image = _image(spec, acc, issues)
    if issues or model is None:
        raise PlanError(issues, f"stack {spec.name}")
    memory = memory_budget(spec, acc, model, serving)
    if not memory.fits:
        issues.append(_does_not_fit(spec, acc, memory, model))
        raise PlanError(issues, f"stack {spec.name}")
    _check_verification(spec, serving, issues, warnings)
    if issues:
        raise PlanError(issues, f"stack {spec.name}")
    warnings += _layout_warnings(spec, acc, info, image)
    nodes = _nodes(spec, acc, model, serving)
    return DeploymentPlan(
        stack=spec.name,
        description=spec.description,
        engine=spec.engine.name,
        runtime=spec.engine.runtime,
        network=spec.engine.network,
        ipc=spec.engine.ipc,
        shm_size=spec.engine.shm_size,
        accelerator=acc.id,
        accelerator_name=acc.name,
        arch=acc.arch,
        model=model,
        tp=spec.parallelism.tp,
        pp=spec.parallelism.pp,
        dp=spec.parallelism.dp,
        backend=spec.parallelism.backend,
        master_port=spec.parallelism.master_port,
        ray_port=spec.parallelism.ray_port,
        serving=serving,
        memory=memory,
        nodes=nodes,
        image=image,
        weights_cache_dir=spec.weights.cache_dir,
        weights_local_path=spec.weights.local_path,
        weights_hub_endpoint=spec.weights.hub_endpoint,
        weights_timeout_s=spec.weights.download_timeout_s,
        hf_token_secret=spec.weights.hf_token_secret,
        startup_timeout_s=_startup_timeout(spec, model),
        campaign=spec.campaign.model_dump(mode="json"),
        ready_paths=catalog.ENGINES[spec.engine.name].ready_paths,
        recipe_sources=tuple(r.source for r in _recipes(spec, acc)),
        warnings=tuple(warnings),
    )


def memory_budget(
    spec: StackSpec, acc: Accelerator, model: ResolvedModel, serving: ServingPlan
) -> MemoryBudget:
    """The per-GPU memory budget of ``spec`` on ``acc`` (see the module docstring)."""
    arch = model.architecture
    tp, pp = spec.parallelism.tp, spec.parallelism.pp
    weights = model.weight_bytes / (tp * pp) / GIB
    kv_dtype = "fp8" if serving.kv_cache_dtype == "fp8" else "bf16"
    kv_bytes = 1 if kv_dtype == "fp8" else 2
    per_token = (
        2 * math.ceil(arch.layers / pp) * math.ceil(arch.kv_heads / tp) * arch.head_dim * kv_bytes
    )
    required = serving.max_model_len * spec.serving.min_full_context_seqs
    utilization = serving.gpu_memory_utilization
    if utilization is None:  # CPU backend: the KV cache is a fixed VLLM_CPU_KVCACHE_SPACE
        kv_gib = float(_cpu_kv_space(spec))
        overhead = _CPU_OVERHEAD_GIB
        usable = weights + overhead + kv_gib
        utilization = 1.0
    else:
        overhead = _overhead_gib(spec, arch, serving)
        usable = acc.memory_gib * utilization
        kv_gib = usable - weights - overhead
    capacity = max(0, int(kv_gib * GIB // per_token))
    return MemoryBudget(
        gpu_memory_gib=acc.memory_gib,
        utilization=utilization,
        usable_gib=round(usable, 2),
        weights_gib=round(weights, 2),
        overhead_gib=round(overhead, 2),
        kv_cache_gib=round(kv_gib, 2),
        kv_dtype=kv_dtype,
        kv_bytes_per_token=per_token,
        kv_capacity_tokens=capacity,
        required_kv_tokens=required,
    )


# --- resolution ------------------------------------------------------------------------------


def _accelerator(spec: StackSpec, issues: list[ConfigIssue]) -> Accelerator | None:
    acc = catalog.ACCELERATORS.get(spec.topology.accelerator.lower())
    if acc is None:
        issues.append(
            ConfigIssue(
                "topology.accelerator",
                f"unknown accelerator {spec.topology.accelerator!r}",
                f"use one of {', '.join(catalog.ACCELERATORS)}",
            )
        )
    return acc


def _model_info(spec: StackSpec, issues: list[ConfigIssue]) -> ModelInfo | None:
    info = catalog.find_model(spec.model.id)
    if info is not None:
        return info
    if spec.model.architecture is None:
        issues.append(
            ConfigIssue(
                "model.id",
                f"{spec.model.id!r} is not in the catalog",
                f"use one of {', '.join(catalog.MODELS)}, or add model.architecture "
                "(layers, heads, kv_heads, ...) and model.checkpoint for another model",
            )
        )
        return None
    return ModelInfo(
        id=spec.model.id,
        name=spec.model.id,
        base_repo=spec.model.checkpoint or spec.model.id,
        arch=spec.model.architecture,
    )


def _resolve_model(
    spec: StackSpec, acc: Accelerator, info: ModelInfo, issues: list[ConfigIssue]
) -> ResolvedModel | None:
    precision = spec.model.precision
    if not _precision_supported(acc, precision, issues):
        return None
    ckpt = _checkpoint(spec, acc, info, issues)
    if ckpt is None:
        return None
    is_path = ckpt.repo.startswith("/")
    stored = ckpt.precision
    online = stored == "bf16" and precision == "fp8"
    if stored != precision and not online:
        issues.append(
            ConfigIssue(
                "model.checkpoint",
                f"{ckpt.repo} is stored in {stored} but model.precision is {precision}",
                f"set model.precision: {stored}, or pick a {precision} checkpoint",
            )
        )
        return None
    if ckpt.gated and not spec.weights.hf_token_secret and not spec.weights.local_path:
        issues.append(
            ConfigIssue(
                "weights.hf_token_secret",
                f"{ckpt.repo} is gated on Hugging Face and the stack names no token secret",
                "accept the licence on huggingface.co, set weights.hf_token_secret: hfToken "
                "and run `pulumi config set --secret hfToken hf_...`; or stage the weights "
                "yourself and set weights.local_path",
            )
        )
    arch = spec.model.architecture or info.arch
    linear, other = catalog.param_counts(arch)
    weight_bytes = int(linear * catalog.WEIGHT_BYTES[precision] + other * 2)
    checkpoint_bytes = int(linear * catalog.WEIGHT_BYTES[stored] + other * 2)
    served = spec.model.served_name or (spec.model.id if is_path else ckpt.repo)
    return ResolvedModel(
        id=info.id,
        name=info.name,
        checkpoint=ckpt.repo,
        is_local_path=is_path,
        revision=spec.model.revision,
        precision=precision,
        stored_precision=stored,
        online_quantization=online,
        served_name=served,
        gated=ckpt.gated,
        architecture=arch,
        weight_bytes=weight_bytes,
        checkpoint_bytes=checkpoint_bytes,
    )


def _precision_supported(acc: Accelerator, precision: str, issues: list[ConfigIssue]) -> bool:
    if precision == "mxfp4" and not acc.mxfp4:
        issues.append(
            ConfigIssue(
                "model.precision",
                f"mxfp4 needs gfx950 (MI350X/MI355X) matrix cores; {acc.id} is {acc.arch}",
                "use precision fp8 on this accelerator, or topology.accelerator mi355x",
            )
        )
        return False
    if precision == "fp8" and not acc.fp8:
        issues.append(
            ConfigIssue(
                "model.precision",
                f"fp8 is not supported on {acc.id}",
                "use precision bf16",
            )
        )
        return False
    return True


def _checkpoint(
    spec: StackSpec, acc: Accelerator, info: ModelInfo, issues: list[ConfigIssue]
) -> Checkpoint | None:
    override = spec.model.checkpoint
    precision = spec.model.precision
    if override is None:
        ckpt = info.checkpoint_for(precision, acc.arch)
        if ckpt is None:
            issues.append(
                ConfigIssue(
                    "model.precision",
                    f"the catalog has no {precision} checkpoint of {info.id} for {acc.arch}",
                    "set model.checkpoint to a repo or path, or choose another precision",
                )
            )
        return ckpt
    if override.startswith("/"):
        return Checkpoint(override, precision, (acc.arch,), gated=False)
    known = info.find_checkpoint(override)
    if known is None:
        return Checkpoint(
            override, precision, (acc.arch,), gated=override.startswith("meta-llama/")
        )
    if not known.usable:
        issues.append(
            ConfigIssue(
                "model.checkpoint",
                f"{override} does not run on ROCm: {known.why_unusable}",
                f"use {known.use_instead} (or remove model.checkpoint to take the catalog's)",
            )
        )
        return None
    if acc.arch not in known.archs:
        issues.append(
            ConfigIssue(
                "model.checkpoint",
                f"{override} does not run on {acc.arch} ({acc.id})",
                f"it runs on {', '.join(known.archs)}",
            )
        )
        return None
    return known


def _check_parallelism(
    spec: StackSpec, arch: ModelArchitecture, issues: list[ConfigIssue], warnings: list[str]
) -> None:
    par, topo = spec.parallelism, spec.topology
    gpus = topo.nodes * topo.gpus_per_node
    if par.tp * par.pp * par.dp != gpus:
        issues.append(
            ConfigIssue(
                "parallelism",
                f"tp × pp × dp = {par.tp} × {par.pp} × {par.dp} = {par.tp * par.pp * par.dp}, "
                f"but the topology has nodes × gpus_per_node = {topo.nodes} × "
                f"{topo.gpus_per_node} = {gpus} GPUs",
                "make tp × pp × dp equal the number of GPUs",
            )
        )
    if spec.fleet.node_count != topo.nodes:
        issues.append(
            ConfigIssue(
                "topology.nodes",
                f"{topo.nodes} node(s) but the fleet has {spec.fleet.node_count}",
                "list one fleet host (or cloud instance) per node",
            )
        )
    if arch.heads % par.tp:
        issues.append(
            ConfigIssue(
                "parallelism.tp",
                f"{par.tp} does not divide the model's {arch.heads} attention heads",
                f"use a divisor of {arch.heads}: {_divisors(arch.heads, limit=16)}",
            )
        )
    kv_ok = arch.kv_heads % par.tp == 0 if par.tp <= arch.kv_heads else par.tp % arch.kv_heads == 0
    if not kv_ok:
        issues.append(
            ConfigIssue(
                "parallelism.tp",
                f"{par.tp} and the model's {arch.kv_heads} KV heads do not split evenly",
                "use a tp that divides the KV heads or is a multiple of them",
            )
        )
    if par.pp > arch.layers:
        issues.append(
            ConfigIssue(
                "parallelism.pp",
                f"{par.pp} pipeline stages for a model with {arch.layers} layers",
                f"use pp <= {arch.layers}",
            )
        )
    if topo.nodes > 1 and par.dp > 1:
        issues.append(
            ConfigIssue(
                "parallelism.dp",
                f"data parallelism across nodes (dp={par.dp}, nodes={topo.nodes}) is not supported",
                "run one stack per node with dp on each, or use dp: 1 with tp × pp",
            )
        )
    if topo.nodes > 1 and par.tp > topo.gpus_per_node:
        warnings.append(
            f"tensor parallelism ({par.tp}) spans nodes: without InfiniBand-class links, "
            f"pp={topo.nodes} × tp={topo.gpus_per_node} is much faster (seed 004)"
        )


def _check_engine(spec: StackSpec, acc: Accelerator, issues: list[ConfigIssue]) -> None:
    engine = catalog.ENGINES[spec.engine.name]
    if spec.topology.nodes > 1 and not engine.multi_node:
        issues.append(
            ConfigIssue(
                "engine.name",
                f"{engine.name} runs on a single node only, but topology.nodes is "
                f"{spec.topology.nodes}",
                "use vllm or sglang for multi-node serving, or one node",
            )
        )
    used = [kind for kind in ("pp", "dp") if getattr(spec.parallelism, kind) > 1]
    unsupported = [kind for kind in used if kind not in engine.layouts]
    if unsupported:
        issues.append(
            ConfigIssue(
                "parallelism",
                f"{engine.name} parallelises with {' and '.join(engine.layouts)} only, not "
                f"{' or '.join(unsupported)}",
                " and ".join(f"set {kind}: 1" for kind in unsupported),
            )
        )
    if acc.arch == "cpu" and spec.engine.name != "vllm":
        issues.append(
            ConfigIssue("engine.name", f"{spec.engine.name} has no CPU backend", "use vllm")
        )
    if spec.parallelism.backend == "ray" and spec.engine.name != "vllm":
        issues.append(
            ConfigIssue(
                "parallelism.backend", "the ray backend is a vLLM option", "use backend: mp"
            )
        )
    if spec.topology.nodes > 1 and spec.engine.network != "host":
        issues.append(
            ConfigIssue(
                "engine.network",
                "multi-node engines need host networking (RCCL and Gloo connect between "
                "nodes on many ports)",
                "set engine.network: host",
            )
        )
    if spec.fleet.hosts and spec.topology.nodes > 1:
        missing = [h.name for h in spec.fleet.hosts if not h.cluster_address]
        if missing:
            issues.append(
                ConfigIssue("fleet.hosts", f"hosts without an address: {', '.join(missing)}")
            )


def _serving(
    spec: StackSpec,
    acc: Accelerator,
    arch: ModelArchitecture,
    model: ResolvedModel | None,
    issues: list[ConfigIssue],
) -> ServingPlan:
    defaults = _recipe_defaults(spec, acc)
    max_len = spec.serving.max_model_len or arch.max_context
    if max_len > arch.max_context:
        issues.append(
            ConfigIssue(
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
            ConfigIssue(
                "serving.kv_cache_dtype",
                f"an fp8 KV cache is not supported on {acc.id}",
                "use kv_cache_dtype: auto",
            )
        )
    batched = spec.serving.max_num_batched_tokens or defaults.get("max_num_batched_tokens")
    util = spec.serving.gpu_memory_utilization
    if "gpu_memory_utilization" not in spec.serving.model_fields_set:
        util = float(defaults.get("gpu_memory_utilization", util))
    return ServingPlan(
        host=spec.serving.host,
        port=spec.serving.port,
        max_model_len=max_len,
        max_num_seqs=spec.serving.max_num_seqs,
        max_num_batched_tokens=int(batched) if batched else None,
        kv_cache_dtype=kv,
        gpu_memory_utilization=None if acc.arch == "cpu" else util,
        api_key_secret=spec.serving.api_key_secret,
    )


def _image(spec: StackSpec, acc: Accelerator, issues: list[ConfigIssue]) -> ImagePlan:
    build = spec.image_build
    if spec.engine.runtime == "process":
        if build.enabled:
            issues.append(
                ConfigIssue(
                    "image_build.enabled",
                    "an image build needs engine.runtime: docker",
                    "set engine.runtime: docker or disable the build",
                )
            )
        return ImagePlan(image=None, build=False)
    if build.enabled:
        return _build_plan(spec, acc, issues)
    image = spec.engine.image or catalog.default_image(
        spec.engine.name, acc.arch, spec.engine.version
    )
    if image is None:
        issues.append(
            ConfigIssue(
                "engine.image",
                f"the catalog has no {spec.engine.name} image for {acc.arch}",
                "set engine.image, or use engine.runtime: process",
            )
        )
        return ImagePlan(image=None, build=False)
    source = "engine.image" if spec.engine.image else "catalog"
    return ImagePlan(image=image, build=False, source=source)


def _build_plan(spec: StackSpec, acc: Accelerator, issues: list[ConfigIssue]) -> ImagePlan:
    build = spec.image_build
    if spec.engine.name != "vllm" or acc.arch not in catalog.GPU_ARCHS:
        issues.append(
            ConfigIssue(
                "image_build.enabled",
                f"the AITER + vLLM build is for vllm on gfx942/gfx950, not "
                f"{spec.engine.name} on {acc.arch}",
                "disable image_build",
            )
        )
    targets = build.gfx_targets or (acc.arch,)
    bad = [t for t in targets if t not in catalog.GPU_ARCHS]
    if bad:
        issues.append(
            ConfigIssue(
                "image_build.gfx_targets",
                f"unknown gfx target(s): {', '.join(bad)}",
                f"use {' or '.join(catalog.GPU_ARCHS)}",
            )
        )
    if acc.arch not in targets:
        issues.append(
            ConfigIssue(
                "image_build.gfx_targets",
                f"the build targets {', '.join(targets)} but the GPUs are {acc.arch}",
                f"include {acc.arch}",
            )
        )
    tag = build.tag or f"aiter-{_slug(build.aiter_ref)}-vllm-{_slug(build.vllm_ref)}-" + "-".join(
        targets
    )
    repo = build.registry or "amdfleet/vllm-aiter"
    return ImagePlan(
        image=f"{repo}:{tag}",
        build=True,
        base_image=build.base_image,
        aiter_ref=build.aiter_ref,
        vllm_ref=build.vllm_ref,
        gfx_targets=tuple(targets),
        registry=build.registry,
        source="image_build",
    )


def _check_verification(
    spec: StackSpec, serving: ServingPlan, issues: list[ConfigIssue], warnings: list[str]
) -> None:
    for i, scenario in enumerate(spec.verification.scenarios):
        longest = math.ceil(scenario.input_len * (1 + scenario.range_ratio)) + math.ceil(
            scenario.output_len * (1 + scenario.range_ratio)
        )
        if scenario.dataset == "random" and longest > serving.max_model_len:
            issues.append(
                ConfigIssue(
                    f"verification.scenarios[{i}]",
                    f"'{scenario.name}' needs up to {longest} tokens per request but "
                    f"serving.max_model_len is {serving.max_model_len}",
                    "shorten input_len/output_len or raise serving.max_model_len",
                )
            )
        limit = serving.max_num_seqs
        if limit and scenario.max_concurrency and scenario.max_concurrency > limit:
            warnings.append(
                f"scenario '{scenario.name}' sends {scenario.max_concurrency} concurrent "
                f"requests but serving.max_num_seqs is {limit}: the excess queues "
                "(seed 002 recommends matching them)"
            )
    for i, scenario in enumerate(spec.verification.scenarios):
        if scenario.baseline and scenario.baseline not in catalog.BASELINES:
            issues.append(
                ConfigIssue(
                    f"verification.scenarios[{i}].baseline",
                    f"unknown baseline {scenario.baseline!r}",
                    f"use one of {', '.join(catalog.BASELINES)}",
                )
            )
    if spec.verification.baseline and spec.verification.baseline not in catalog.BASELINES:
        issues.append(
            ConfigIssue(
                "verification.baseline",
                f"unknown baseline {spec.verification.baseline!r}",
                f"use one of {', '.join(catalog.BASELINES)}",
            )
        )


def _layout_warnings(
    spec: StackSpec, acc: Accelerator, info: ModelInfo, image: ImagePlan
) -> list[str]:
    warnings = []
    verified = catalog.verified_min_tp("sglang", acc.id, info.id, spec.model.precision)
    if verified and spec.parallelism.tp < verified:
        warnings.append(
            f"tp={spec.parallelism.tp} is below the smallest TP the SGLang cookbook "
            f"verified for this model on {acc.id} (tp={verified}, seed 003)"
        )
    if spec.serving.api_key_secret is None:
        warnings.append("serving.api_key_secret is null: the endpoint accepts any client")
    if image.image and not image.build and image.image.endswith((":latest", ":nightly")):
        warnings.append(
            f"{image.image} is a moving tag: runs are comparable only through the image "
            "digest amdfleet records at deploy time"
        )
    return warnings


# --- memory -------------------------------------------------------------------------------


def _overhead_gib(spec: StackSpec, arch: ModelArchitecture, serving: ServingPlan) -> float:
    tp = spec.parallelism.tp
    tokens = serving.max_num_batched_tokens or DEFAULT_MAX_BATCHED_TOKENS
    activations = tokens * (2 * arch.hidden + 3 * arch.intermediate / tp) * 2
    logits = (serving.max_num_seqs or DEFAULT_MAX_NUM_SEQS) * arch.vocab * 4
    runtime = _RUNTIME_GIB + (_RUNTIME_GIB_MULTI_GPU if tp * spec.parallelism.pp > 1 else 0)
    return runtime + (activations + logits) / GIB


def _cpu_kv_space(spec: StackSpec) -> int:
    env = _merged_env(spec, catalog.ACCELERATORS["cpu"])
    return int(env.get("VLLM_CPU_KVCACHE_SPACE", "4"))


def _does_not_fit(
    spec: StackSpec, acc: Accelerator, memory: MemoryBudget, model: ResolvedModel
) -> ConfigIssue:
    needed, has = memory.needed_gib, memory.usable_gib
    message = (
        f"does not fit: needs {needed:.1f} GiB per GPU, has {has:.1f} "
        f"({acc.memory_gib:g} GiB × {memory.utilization}) — weights {memory.weights_gib:.1f}, "
        f"overhead {memory.overhead_gib:.1f}, KV cache for {memory.required_kv_tokens} tokens "
        f"{memory.required_kv_tokens * memory.kv_bytes_per_token / GIB:.1f}"
    )
    return ConfigIssue("parallelism", message, "; or ".join(_suggestions(spec, acc, model)))


def _suggestions(spec: StackSpec, acc: Accelerator, model: ResolvedModel) -> list[str]:
    out = []
    arch = model.architecture
    heads_ok = [t for t in (2, 4, 8) if t > spec.parallelism.tp and arch.heads % t == 0]
    for tp in heads_ok:
        candidate = spec.model_copy(
            update={
                "parallelism": spec.parallelism.model_copy(update={"tp": tp}),
                "topology": spec.topology.model_copy(
                    update={"gpus_per_node": tp * spec.parallelism.dp}
                ),
            }
        )
        if _fits(candidate, acc, model):
            out.append(f"use tp={tp} (gpus_per_node={tp * spec.parallelism.dp})")
            break
    for precision in ("fp8", "mxfp4"):
        cheaper = catalog.WEIGHT_BYTES[precision] < catalog.WEIGHT_BYTES[model.precision]
        supported = acc.fp8 if precision == "fp8" else acc.mxfp4
        if cheaper and supported:
            linear, other = catalog.param_counts(arch)
            lighter = model.model_copy(
                update={
                    "precision": precision,
                    "weight_bytes": int(linear * catalog.WEIGHT_BYTES[precision] + other * 2),
                }
            )
            if _fits(spec, acc, lighter):
                out.append(f"use model.precision: {precision}")
                break
    shorter = _max_fitting_len(spec, acc, model)
    if shorter:
        out.append(f"shorten serving.max_model_len to {shorter} or less")
    return out or ["use more GPUs (higher tp or pp across more nodes)"]


def _fits(spec: StackSpec, acc: Accelerator, model: ResolvedModel) -> bool:
    serving = _serving(spec, acc, model.architecture, model, [])
    return memory_budget(spec, acc, model, serving).fits


def _max_fitting_len(spec: StackSpec, acc: Accelerator, model: ResolvedModel) -> int | None:
    serving = _serving(spec, acc, model.architecture, model, [])
    budget = memory_budget(spec, acc, model, serving)
    tokens = budget.kv_capacity_tokens // spec.serving.min_full_context_seqs
    tokens = (tokens // 1024) * 1024
    return tokens if tokens >= 2048 else None


# --- nodes ----------------------------------------------------------------------------------


def _nodes(
    spec: StackSpec, acc: Accelerator, model: ResolvedModel, serving: ServingPlan
) -> tuple[NodePlan, ...]:
    slots = _host_slots(spec)
    head = slots[0].cluster_address
    env = _merged_env(spec, acc)
    nodes = []
    for rank, slot in enumerate(slots):
        node_env = {**env, **_network_env(spec, slot.host, slot.cluster_address)}
        nodes.append(
            NodePlan(
                rank=rank,
                host=slot.name,
                address=slot.address,
                cluster_address=slot.cluster_address,
                role="head" if rank == 0 else "worker",
                serves_api=rank == 0,
                gpus=spec.topology.gpus_per_node,
                env=dict(sorted(node_env.items())),
                secret_env=_secret_env(spec),
                argv=_engine_argv(spec, acc, model, serving, rank, head),
                ray_argv=_ray_argv(spec, rank, head, slot.cluster_address),
                remote_dir=f"{REMOTE_ROOT}/{spec.name}",
            )
        )
    return tuple(nodes)


class _Slot(NamedTuple):
    name: str
    address: str | None
    cluster_address: str | None
    host: HostSpec | None


def _host_slots(spec: StackSpec) -> list[_Slot]:
    if spec.fleet.cloud is not None:
        return [_Slot(f"{spec.name}-{i}", None, None, None) for i in range(spec.fleet.cloud.count)]
    slots = []
    for host in spec.fleet.hosts:
        if host.connection == "local":
            slots.append(_Slot(host.name, "127.0.0.1", "127.0.0.1", host))
        else:
            slots.append(_Slot(host.name, host.address, host.cluster_address, host))
    return slots


def _merged_env(spec: StackSpec, acc: Accelerator) -> dict[str, str]:
    env: dict[str, str] = {}
    for recipe in _recipes(spec, acc):
        env.update(recipe.env)
    if spec.engine.runtime == "process":
        env["HF_HOME"] = spec.weights.cache_dir
        if spec.engine.name == "vllm":
            # vLLM's IPC sockets go in the engine directory, which destroy removes, not
            # in the host's /tmp (a container keeps them inside itself).
            env["VLLM_RPC_BASE_PATH"] = f"{REMOTE_ROOT}/{spec.name}"
    else:
        env["HF_HOME"] = spec.weights.container_dir
    # Weights are staged before the engine starts, so it never needs the hub.
    env["HF_HUB_OFFLINE"] = "1"
    env.update(spec.engine.extra_env)
    return env


def _recipes(spec: StackSpec, acc: Accelerator) -> tuple[catalog.Recipe, ...]:
    if not spec.engine.recipe:
        return ()
    return catalog.recipes_for(spec.engine.name, acc.arch, spec.model.precision)


def _recipe_defaults(spec: StackSpec, acc: Accelerator) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for recipe in _recipes(spec, acc):
        defaults.update(recipe.defaults)
    return defaults


def _network_env(spec: StackSpec, host: HostSpec | None, address: str | None) -> dict[str, str]:
    if spec.topology.nodes == 1:
        return {}
    env: dict[str, str] = {}
    if address and spec.engine.name == "vllm":
        env["VLLM_HOST_IP"] = address
    if host is not None and host.network_interface:
        env["GLOO_SOCKET_IFNAME"] = host.network_interface
        env["NCCL_SOCKET_IFNAME"] = host.network_interface
    if host is not None and host.rdma_devices:
        env["NCCL_IB_HCA"] = ",".join(host.rdma_devices)
    return env


def _secret_env(spec: StackSpec) -> dict[str, str]:
    secrets: dict[str, str] = {}
    if spec.serving.api_key_secret:
        secrets["AMDFLEET_API_KEY"] = spec.serving.api_key_secret
        # vLLM and TGI read their key from the environment (VLLM_API_KEY, API_KEY);
        # SGLang only takes --api-key, expanded from AMDFLEET_API_KEY at launch.
        engine_var = {"vllm": "VLLM_API_KEY", "tgi": "API_KEY"}.get(spec.engine.name)
        if engine_var:
            secrets[engine_var] = spec.serving.api_key_secret
    if spec.weights.hf_token_secret:
        secrets["HF_TOKEN"] = spec.weights.hf_token_secret
    return secrets


def _engine_argv(
    spec: StackSpec,
    acc: Accelerator,
    model: ResolvedModel,
    serving: ServingPlan,
    rank: int,
    head_address: str | None,
) -> tuple[str, ...]:
    builder = {"vllm": _vllm_args, "sglang": _sglang_args, "tgi": _tgi_args}[spec.engine.name]
    generated = builder(spec, model, serving, rank, head_address or "<head-address>")
    recipe_args: list[tuple[str, str | None]] = []
    for recipe in _recipes(spec, acc):
        recipe_args.extend(recipe.args)
    merged = _merge_flags(generated, recipe_args, _parse_flags(spec.engine.extra_args))
    return (*_command(spec), *_positional(spec, model), *_flatten(merged))


def _command(spec: StackSpec) -> tuple[str, ...]:
    command = catalog.ENGINES[spec.engine.name].command
    if spec.engine.runtime == "process" and spec.engine.executable:
        return (spec.engine.executable, *command[1:])
    return command


def _positional(spec: StackSpec, model: ResolvedModel) -> tuple[str, ...]:
    return (model.checkpoint,) if spec.engine.name == "vllm" else ()


Flags = list[tuple[str, str | None]]


@dataclass(frozen=True)
class _FlagNames:
    """How vLLM and SGLang spell the same serving options."""

    tp: str
    pp: str
    dp: str
    max_len: str
    max_seqs: str
    batched_tokens: str | None
    memory: str
    kv_fp8: tuple[str, str]


_VLLM = _FlagNames(
    tp="--tensor-parallel-size",
    pp="--pipeline-parallel-size",
    dp="--data-parallel-size",
    max_len="--max-model-len",
    max_seqs="--max-num-seqs",
    batched_tokens="--max-num-batched-tokens",
    memory="--gpu-memory-utilization",
    kv_fp8=("--kv-cache-dtype", "fp8"),
)
_SGLANG = _FlagNames(
    tp="--tp",
    pp="--pp-size",
    dp="--dp",
    max_len="--context-length",
    max_seqs="--max-running-requests",
    batched_tokens=None,
    memory="--mem-fraction-static",
    kv_fp8=("--kv-cache-dtype", "fp8_e4m3"),
)


def _vllm_args(
    spec: StackSpec, model: ResolvedModel, serving: ServingPlan, rank: int, head: str
) -> Flags:
    flags = _serving_flags(spec, model, serving, _VLLM)
    if spec.topology.nodes > 1:
        flags += _vllm_multinode_flags(spec, rank, head)
    return flags


def _vllm_multinode_flags(spec: StackSpec, rank: int, head: str) -> Flags:
    par = spec.parallelism
    if par.backend == "ray":
        return [("--distributed-executor-backend", "ray")]
    flags: Flags = [
        ("--distributed-executor-backend", "mp"),
        ("--nnodes", str(spec.topology.nodes)),
        ("--node-rank", str(rank)),
        ("--master-addr", head),
        ("--master-port", str(par.master_port)),
    ]
    if rank > 0:
        flags.append(("--headless", None))
    return flags


def _sglang_args(
    spec: StackSpec, model: ResolvedModel, serving: ServingPlan, rank: int, head: str
) -> Flags:
    flags: Flags = [("--model-path", model.checkpoint)]
    flags += _serving_flags(spec, model, serving, _SGLANG)
    if spec.serving.api_key_secret:
        flags.append(("--api-key", "${AMDFLEET_API_KEY}"))
    if spec.topology.nodes > 1:
        flags += [
            ("--nnodes", str(spec.topology.nodes)),
            ("--node-rank", str(rank)),
            ("--dist-init-addr", f"{head}:{spec.parallelism.master_port}"),
        ]
    return flags


def _serving_flags(
    spec: StackSpec, model: ResolvedModel, serving: ServingPlan, names: _FlagNames
) -> Flags:
    """Endpoint, parallelism, checkpoint and memory flags vLLM and SGLang share."""
    par = spec.parallelism
    flags: Flags = [
        ("--host", serving.host),
        ("--port", str(serving.port)),
        ("--served-model-name", model.served_name),
        (names.tp, str(par.tp)),
    ]
    if par.pp > 1:
        flags.append((names.pp, str(par.pp)))
    if par.dp > 1:
        flags.append((names.dp, str(par.dp)))
    if model.revision and not model.is_local_path:
        flags.append(("--revision", model.revision))
    if model.online_quantization:
        flags.append(("--quantization", "fp8"))
    flags.append((names.max_len, str(serving.max_model_len)))
    if serving.max_num_seqs:
        flags.append((names.max_seqs, str(serving.max_num_seqs)))
    if serving.max_num_batched_tokens and names.batched_tokens:
        flags.append((names.batched_tokens, str(serving.max_num_batched_tokens)))
    if serving.gpu_memory_utilization is not None:
        flags.append((names.memory, f"{serving.gpu_memory_utilization:g}"))
    if serving.kv_cache_dtype == "fp8":
        flags.append(names.kv_fp8)
    return flags


def _tgi_args(
    spec: StackSpec, model: ResolvedModel, serving: ServingPlan, rank: int, head: str
) -> Flags:
    flags: Flags = [
        ("--model-id", model.checkpoint),
        ("--hostname", serving.host),
        ("--port", str(serving.port)),
        ("--num-shard", str(spec.parallelism.tp)),
        ("--max-total-tokens", str(serving.max_model_len)),
        ("--max-input-tokens", str(serving.max_model_len - 1)),
    ]
    if model.revision and not model.is_local_path:
        flags.append(("--revision", model.revision))
    if model.online_quantization:
        flags.append(("--quantize", "fp8"))
    if serving.max_num_seqs:
        flags.append(("--max-concurrent-requests", str(serving.max_num_seqs)))
    return flags


def _ray_argv(spec: StackSpec, rank: int, head: str | None, address: str | None) -> tuple[str, ...]:
    if spec.topology.nodes == 1 or spec.parallelism.backend != "ray":
        return ()
    port = str(spec.parallelism.ray_port)
    own = ("--node-ip-address", address) if address else ()
    if rank == 0:
        return ("ray", "start", "--head", "--port", port, *own)
    return ("ray", "start", "--address", f"{head or '<head-address>'}:{port}", *own, "--block")


def _parse_flags(tokens: Iterable[str]) -> Flags:
    flags: Flags = []
    items = list(tokens)
    i = 0
    while i < len(items):
        token = items[i]
        if "=" in token and token.startswith("--"):
            name, _, value = token.partition("=")
            flags.append((name, value))
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            flags.append((token, items[i + 1]))
            i += 1
        else:
            flags.append((token, None))
        i += 1
    return flags


def _merge_flags(*layers: Flags) -> Flags:
    merged: dict[str, str | None] = {}
    for layer in layers:
        for name, value in layer:
            merged[_canonical(name)] = value
    return list(merged.items())


def _canonical(flag: str) -> str:
    return "--" + flag.lstrip("-").replace("_", "-")


def _flatten(flags: Flags) -> tuple[str, ...]:
    out: list[str] = []
    for name, value in flags:
        out.append(name)
        if value is not None:
            out.append(value)
    return tuple(out)


# --- small helpers -----------------------------------------------------------------------------


def _startup_timeout(spec: StackSpec, model: ResolvedModel) -> int:
    if spec.engine.startup_timeout_s:
        return spec.engine.startup_timeout_s
    per_node_gib = model.checkpoint_bytes / spec.topology.nodes / GIB
    return int(_BASE_STARTUP_S + per_node_gib / _LOAD_GIB_PER_S)


def _divisors(n: int, limit: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, limit) + 1) if n % d == 0)


def _slug(ref: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in ref).strip("-")[:24]
