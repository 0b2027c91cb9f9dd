"""The deployment plan: typed, nested, frozen records the planner produces.

:class:`DeploymentPlan` is everything the renderers, the Pulumi components and the
providers need, resolved: one sub-plan per concern (accelerator, model, engine,
parallelism, serving, memory, image, weights, verification, campaign, and the cloud
instances of a cloud fleet) and one
:class:`NodePlan` per node, which carries the node's connection data
(:class:`~amdfleet.remote.transport.target.HostTarget`) and what preflight demands of it. Nothing
downstream re-reads the stack spec.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from amdfleet.addresses import host_port
from amdfleet.config import ModelArchitecture
from amdfleet.config.verification import repeated
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.target import HostTarget

GIB = 2**30
REMOTE_ROOT = "/opt/amdfleet"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AcceleratorPlan(_Frozen):
    """The accelerator every node has."""

    id: str
    name: str
    arch: str
    memory_gib: float

    @property
    def is_cpu(self) -> bool:
        """The ``local`` stack's CPU "accelerator": no GPU, no GPU memory to budget."""
        return self.arch == "cpu"


class ModelPlan(_Frozen):
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


class ParallelismPlan(_Frozen):
    """How the model is split: tensor, pipeline and data parallel sizes, and for more
    than one node the executor backend and its rendezvous ports."""

    tp: int
    pp: int
    dp: int
    backend: str
    master_port: int
    ray_port: int
    lm_head_every_stage: bool = False
    """With pp > 1: whether every stage holds the LM head (SGLang builds it on each
    stage), not only the last; the memory budget counts it where it is."""


class ServingPlan(_Frozen):
    """Resolved serving knobs (recipe defaults applied under the stack's own values).

    ``gpu_memory_utilization`` is None exactly when the accelerator is a CPU, which has
    no GPU memory to fraction (its KV cache is ``cpu_kv_cache_gib``)."""

    host: str
    port: int
    max_model_len: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    kv_cache_dtype: str
    gpu_memory_utilization: float | None
    cpu_kv_cache_gib: int | None
    api_key_secret: str | None
    min_full_context_seqs: int
    admit_requests: int = 0
    """Requests in flight the stack's own verification peaks at (0: it sends none): an
    engine whose in-flight limit refuses past it (TGI) has it raised to admit them."""
    dtype: str | None = None
    """The dtype the engine computes in (``--dtype``); None leaves it to the engine (the
    checkpoint's own dtype)."""

    @model_validator(mode="after")
    def _one_memory_knob(self) -> ServingPlan:
        if (self.gpu_memory_utilization is None) == (self.cpu_kv_cache_gib is None):
            raise ValueError(
                "a serving plan has either gpu_memory_utilization (GPU) or cpu_kv_cache_gib "
                "(CPU), exactly one"
            )
        return self


class StageMemory(_Frozen):
    """One pipeline stage's share of a GPU, GiB: the weights of its layers (plus the
    embeddings on the first stage and the LM head where the engine puts it) and the KV
    cache for its own layers only."""

    stage: int
    layers: int
    weights_gib: float
    kv_cache_gib: float
    kv_capacity_tokens: int


class MemoryBudget(_Frozen):
    """Per-GPU memory budget, GiB. With pp > 1 the GPUs of different stages hold
    different weights: the numbers are those of the tightest stage (``stage``, the one
    with the least KV capacity, which bounds the engine's), and ``stages`` lists each."""

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
    stage: int = 0
    stages: tuple[StageMemory, ...] = ()

    @property
    def fits(self) -> bool:
        """Whether the weights, overhead and required KV cache fit."""
        return self.kv_capacity_tokens >= self.required_kv_tokens

    @property
    def needed_gib(self) -> float:
        """Memory per GPU the layout needs (weights + overhead + required KV cache)."""
        kv = self.required_kv_tokens * self.kv_bytes_per_token / GIB
        return self.weights_gib + self.overhead_gib + kv


class ReadinessPlan(_Frozen):
    """How the head node's engine is known to serve: every path answers 200 at
    ``base_url`` (as seen on the host itself) and ``/v1/models`` lists the served name,
    before ``timeout_s``."""

    base_url: str
    paths: tuple[str, ...]
    served_name: str
    timeout_s: int


class EnginePlan(_Frozen):
    """Which engine runs, and how it is run and supervised on every node."""

    name: str
    version: str
    """The engine release that runs (the catalog's pin, or ``engine.version``)."""
    manifest: str | None
    """Where the manifest its command was checked against comes from (None: none)."""
    runtime: Literal["docker", "process"]
    network: str
    ipc: str
    shm_size: str
    container_name: str
    readiness: ReadinessPlan
    python: str
    """The engine's Python interpreter on the nodes (process runtime: its virtualenv's)."""
    adopt: str | None = None
    """The running engine to import instead of starting one (``engine.adopt``)."""

    @property
    def startup_timeout_s(self) -> int:
        """How long the head may take to serve after start."""
        return self.readiness.timeout_s


class ImagePlan(_Frozen):
    """Which container image the engine runs in (docker runtime), and how it gets to the
    nodes: pulled and pinned to a digest, built once and pushed to a registry, or built on
    every node."""

    image: str | None
    """The reference known at plan time: a tag or digest reference for a pre-built image;
    ``<registry>/<repository>:c-<content hash>`` for a build."""
    build: bool
    base_image: str | None = None
    aiter_ref: str | None = None
    """The AITER release tag built (or the commit, when the stack names one)."""
    aiter_commit: str | None = None
    """The commit the build checks out (the tag itself while the catalog records none)."""
    vllm_ref: str | None = None
    """The vLLM release tag built (or the commit, when the stack names one)."""
    vllm_commit: str | None = None
    gfx_targets: tuple[str, ...] = ()
    registry: str | None = None
    """Registry address a build is pushed to (None: every node builds it)."""
    repository: str | None = None
    registry_username: str | None = None
    registry_password_secret: str | None = None
    content_hash: str | None = None
    """SHA-256 of the rendered Dockerfile and the build arguments; the image's tag."""
    build_host: str | None = None
    """Name of the host the build runs on (registry builds only)."""
    build_target: HostTarget | None = None
    """How to reach the build host (None: a cloud head, known only once it exists)."""
    build_timeout_s: int = 0
    build_work_dir: str = ""
    """Where the build host keeps build contexts and logs."""
    build_hours: float = 0.0
    """Catalog estimate of one build's duration (named when a build is refused)."""
    pin: bool = False
    """A pre-built image given by a tag: resolved to a digest once at ``up`` and pinned."""
    source: str = ""


class WeightsPlan(_Frozen):
    """Where the checkpoint is staged on every node, and with what."""

    repo: str
    revision: str | None
    cache_dir: str
    local_path: str | None
    hub_endpoint: str | None
    timeout_s: int
    hf_token_secret: str | None
    python: str
    """The Python that stages the weights on a process-runtime host (the engine's own,
    which has ``huggingface_hub``)."""
    keep_on_delete: bool
    container_dir: str


class NodePlan(_Frozen):
    """What runs on one node, and how to reach it. ``target`` is None only for a cloud
    instance that does not exist yet."""

    rank: int
    name: str
    target: HostTarget | None
    address: str | None
    """Where the API and SSH reach it (None: a cloud instance's, known once it exists)."""
    cluster_address: str | None
    """Where the other nodes reach it (a multi-node cloud plan: its :class:`AddressSlot`'s
    placeholder until bound; None: a one-node cloud plan, which needs none)."""
    role: Literal["head", "worker"]
    serves_api: bool
    gpus: int
    env: dict[str, str]
    secret_env: dict[str, str]
    argv: tuple[str, ...]
    ray_argv: tuple[str, ...] = ()
    remote_dir: str
    requirement: HostRequirement
    api_key_file: str | None = None
    """Where the launch script writes the API key for an engine that reads it from a
    file (SGLang's ``--config``); None when the engine takes it from its environment."""
    pipeline_stages: tuple[int, ...] = ()
    """Multi-node: the pipeline stages whose layers this node's GPUs hold."""
    tp_ranks: tuple[int, ...] = ()
    """Multi-node: the tensor-parallel ranks (within a stage) this node's GPUs run."""
    network_interface: str | None = None
    """The interface the stack expects to carry collective traffic (checked against the
    host's facts by the cluster check, which derives the one the engine uses)."""
    rdma_devices: tuple[str, ...] = ()
    """RDMA devices the stack names for this node (each must exist on the host)."""


class AddressSlot(_Frozen):
    """A node's cluster address in a plan made before its cloud instance exists: the
    plan's values hold :attr:`placeholder` where the address goes, until
    :func:`amdfleet.plan.binding.bind_addresses` puts the instance's address there
    (that module says which values they are)."""

    node: str
    """The node whose instance's address this is."""
    kind: Literal["cluster"] = "cluster"
    """Which of its addresses: ``cluster``, where the other nodes reach it (the instance's
    private address when the cloud gives one, else its public address)."""

    @property
    def placeholder(self) -> str:
        """What the unbound plan holds where the address goes (never an address: an
        address, IPv4 or IPv6, holds no ``<``)."""
        return f"<{self.node}-{self.kind}-address>"


class InstanceAddresses(_Frozen):
    """Where a node's cloud instance is reached, once it exists: the values an
    :class:`AddressSlot` is bound to."""

    public: str
    private: str | None = None
    """The address in the cloud's private network (None: the cloud gives none)."""

    @property
    def cluster(self) -> str:
        """Where the other nodes reach it: the private address when there is one."""
        return self.private or self.public


class ClusterPlan(_Frozen):
    """Where the nodes of a multi-node stack meet: the head and the ports the others
    reach on it, and what the API port serves."""

    head_name: str
    head_address: str
    """The head's cluster address (in a cloud plan, its :class:`AddressSlot`'s placeholder
    until the address is bound)."""
    api_port: int
    head_ports: dict[str, int]
    """Port on the head by purpose (rendezvous, Ray GCS, SGLang dist-init)."""
    worker_http_paths: tuple[str, ...]
    """What workers answer on the API port (SGLang: health only); empty: nothing."""


class ScenarioInput(_Frozen):
    """One serving benchmark as it runs (``verification.scenarios[i]``, or a CLI sweep
    point, or a campaign's load point). ``baseline`` and ``min_output_throughput`` are the
    scenario's own; None defers to the verification's."""

    name: str = Field(description="Scenario label in reports (unique in the verification).")
    dataset: Literal["random", "sharegpt", "prompts"] = Field(
        description="'random' prompts of exact token lengths, a ShareGPT json file, or a "
        "file of fixed prompts (one per line)."
    )
    dataset_path: str | None = Field(None, description="Path to the ShareGPT or prompts file.")
    input_len: int = Field(description="Prompt tokens (random dataset).")
    output_len: int = Field(description="Generated tokens per request.")
    range_ratio: float = Field(description="Length spread: lengths uniform in len×(1±ratio).")
    num_prompts: int = Field(description="Requests to send.")
    max_concurrency: int | None = Field(
        None, description="Cap on in-flight requests (None: no cap)."
    )
    request_rate: float | None = Field(
        None, description="Arrival rate, requests/s (None: all at once)."
    )
    burstiness: float = Field(description="Gamma shape for arrivals; 1.0 is a Poisson process.")
    endpoint: Literal["completions", "chat"] = Field(
        description="/v1/completions or /v1/chat/completions."
    )
    ignore_eos: bool = Field(description="Generate exactly output_len tokens.")
    seed: int = Field(description="Seed for prompts and arrivals.")
    baseline: str | None = Field(
        None, description="Catalog baseline for this scenario (None: the verification's)."
    )
    min_output_throughput: float | None = Field(
        None,
        description="Minimum output tokens/s for this scenario (None: the stack-wide threshold).",
    )


class AccuracyInput(_Frozen):
    """The GSM8K check as it runs (``data_path`` None: downloaded when online)."""

    task: Literal["gsm8k"] = Field(description="Task (GSM8K).")
    num_fewshot: int = Field(description="Few-shot examples per prompt.")
    limit: int | None = Field(None, description="Score only the first N test problems (None: all).")
    data_path: str | None = Field(
        None,
        description="Directory with GSM8K test.jsonl/train.jsonl (None: downloaded when online).",
    )
    concurrency: int = Field(description="Requests in flight while scoring.")
    max_tokens: int = Field(description="Generation budget per problem.")


class ParityInput(_Frozen):
    """The output-parity check as it runs: the reference file's absolute path and the
    recorded dtype it compares with (None only when the planner reported it unknown)."""

    reference: str = Field(description="The reference file's absolute path.")
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None, description="Which of the reference's recorded dtypes to compare with."
    )
    tokens: int = Field(description="Compare the first K generated tokens of each prompt.")
    min_match: float = Field(
        description="Minimum share of prompts whose first `tokens` tokens match the "
        "reference exactly."
    )
    concurrency: int = Field(description="Prompts in flight.")


class ThresholdsInput(_Frozen):
    """The stack-wide pass/fail levels (None: the metric is reported, not gated)."""

    min_success_rate: float = Field(
        description="Minimum fraction of benchmark requests that succeed."
    )
    min_output_throughput: float | None = Field(
        None, description="Minimum output tokens/s (each scenario)."
    )
    max_p99_ttft_ms: float | None = Field(None, description="Maximum p99 TTFT, ms.")
    max_p99_tpot_ms: float | None = Field(None, description="Maximum p99 TPOT, ms.")
    min_flexible_accuracy: float | None = Field(
        None, description="Minimum GSM8K flexible-extract exact match."
    )
    min_strict_accuracy: float | None = Field(
        None, description="Minimum GSM8K strict-match exact match."
    )


class VerificationInput(_Frozen):
    """What the verification runs and judges: the record the Verification provider and
    :mod:`amdfleet.verify` consume (never the config section). An absent optional key is
    None (the engine drops null properties from a resource's state). Its JSON is the
    provider's ``spec`` input, key for key what the config section serialized to before
    this record existed, so a live stack's verification does not re-run on upgrade:
    that is why ``enabled`` and ``allow_no_benchmark`` (the planner's concern) ride
    along."""

    enabled: bool = Field(description="Whether the verification runs.")
    scenarios: tuple[ScenarioInput, ...] = Field(description="Serving benchmarks to run, in order.")
    accuracy: AccuracyInput | None = Field(None, description="Accuracy check to run (None: none).")
    parity: ParityInput | None = Field(
        None,
        description="Output-parity check against a recorded reference (None: none); it runs first.",
    )
    thresholds: ThresholdsInput = Field(description="Pass/fail thresholds.")
    baseline: str | None = Field(
        None, description="Catalog baseline id (a seed's published numbers) to compare against."
    )
    request_timeout_s: float = Field(description="Per-request timeout, seconds.")
    allow_no_benchmark: bool = Field(
        description="Whether an enabled verification may run no benchmark scenario."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> VerificationInput:
        # Results are keyed by scenario name (reports, the provider's ``result``).
        if dupes := repeated(s.name for s in self.scenarios):
            raise ValueError(
                f"scenario names must be unique; repeated: {', '.join(dupes)} — rename them"
            )
        return self


class VerificationPlan(_Frozen):
    """The verification run against the endpoint once the engine serves."""

    input: VerificationInput
    report_dir: str

    @property
    def enabled(self) -> bool:
        """Whether verification runs (the stack is then ready only if it passes)."""
        return self.input.enabled


class FabricPlan(_Frozen):
    """The fabric check before the engine starts (issue 10, item 7): which test, the
    message sweep, the gate, and where it runs. ``kind`` is ``rccl`` (rccl-tests'
    ``all_reduce_perf``, GPU fleets) or ``gloo`` (a torch.distributed sweep, CPU stacks)."""

    kind: Literal["rccl", "gloo"]
    min_bytes: int
    max_bytes: int
    gate_bytes: int
    min_busbw_gbps: float | None
    iters: int
    warmup_iters: int
    timeout_s: int
    port: int
    python: str
    """The Python that runs the gloo sweep (the engine's own, which has torch)."""
    all_reduce_perf: str
    mpirun: str
    mpirun_args: tuple[str, ...]
    extra_env: dict[str, str]
    image: str | None
    """The engine image the test runs in (docker runtime), None for the process runtime."""
    work_dir: str
    container_name: str


class CloudPlan(_Frozen):
    """The cloud instances a cloud fleet rents, with every default resolved from the
    catalog, and what they cost. ``token_secret`` is the name of the config key holding
    the API token, never its value."""

    provider: str
    title: str
    api_url: str
    region: str
    size: str
    gpus: int
    """GPUs per instance (the size's)."""
    count: int
    image: str | None
    user: str
    team: str | None
    trust_first_use: bool
    boot_timeout_s: float
    token_secret: str
    ssh_key_path: str
    price_hourly_usd: float
    """Per instance."""
    fleet_hourly_usd: float
    """``price_hourly_usd`` × ``count``."""
    ttl_hours: float | None
    campaign_usd: float | None
    """``fleet_hourly_usd`` × ``ttl_hours``; None without a TTL (the cost is unbounded)."""
    max_hourly_usd: float | None
    max_total_usd: float | None
    size_source: str


class LifetimePlan(_Frozen):
    """How long the deployment is meant to live, and what is due past that (the stack's
    lifetime policy, exported as its ``campaign`` output)."""

    ttl_hours: float | None
    on_expiry: Literal["warn", "destroy"]
    keep_weights: bool
    owner: str | None


class DeploymentPlan(_Frozen):
    """Everything needed to render, deploy and verify a stack."""

    stack: str
    description: str
    accelerator: AcceleratorPlan
    model: ModelPlan
    engine: EnginePlan
    parallelism: ParallelismPlan
    serving: ServingPlan
    memory: MemoryBudget
    nodes: tuple[NodePlan, ...]
    image: ImagePlan
    weights: WeightsPlan
    verification: VerificationPlan
    campaign: LifetimePlan
    recipe_sources: tuple[str, ...]
    recipe_dropped: tuple[str, ...] = ()
    """What the seeds' recipes set that the pinned engine no longer takes, and why."""
    warnings: tuple[str, ...]
    cluster: ClusterPlan | None = None
    """Multi-node only: the head, its ports, and what workers serve."""
    fabric: FabricPlan | None = None
    """The fabric check, None when the stack does not enable it."""
    cloud: CloudPlan | None = None
    """Cloud fleets only: the instances to rent and their cost."""
    address_slots: tuple[AddressSlot, ...] = ()
    """The addresses known only at deploy time, whose placeholders the plan's values hold
    (a cloud fleet of several nodes: each node's cluster address); empty once bound
    (:func:`amdfleet.plan.binding.bind_addresses`) and for a fleet of hosts."""

    @property
    def head(self) -> NodePlan:
        """The rank-0 node, which serves the API."""
        return self.nodes[0]

    @property
    def endpoint(self) -> str:
        """Base URL of the OpenAI-compatible API (``<pending>`` before provisioning)."""
        return self.endpoint_at(self.head.address)

    def endpoint_at(self, address: str | None) -> str:
        """Base URL of the OpenAI-compatible API on the head reached at ``address`` (a
        cloud head's, once its instance exists; ``<pending>`` when None)."""
        if address is None:
            return f"http://<pending>:{self.serving.port}"
        return f"http://{host_port(address, self.serving.port)}"
