"""The stack schema: what a user writes in ``stacks/Pulumi.<stack>.yaml``.

A stack file is an ordinary Pulumi stack configuration. Each section of
:class:`StackSpec` is one structured config key in the ``amdfleet`` namespace
(``amdfleet:fleet``, ``amdfleet:model``, ...). Secrets (the API key, the Hugging Face
token) are separate keys set with ``pulumi config set --secret``; the schema only
names them, so a stack file kept in a repository never holds a secret in plain text.

This module is the only code that touches ``pulumi.Config``. The same schema is loaded
without Pulumi by :func:`load_stack_file` (for ``amdfleet plan/render``): it reads the
YAML, checks that secret keys are stored encrypted, and never decrypts them.

Every model is frozen and ``extra="forbid"``: a typo'd key is an error that names the
field path and suggests the nearest valid name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from amdfleet import secretscan
from amdfleet.addresses import canonical_address, check_address
from amdfleet.errors import ConfigError, ConfigIssue, field_path, unknown_key_issue
from amdfleet.hostkeys import check_host_key

NAMESPACE = "amdfleet"
STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"

Precision = Literal["bf16", "fp8", "mxfp4"]
Runtime = Literal["docker", "process"]

_NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
_CONFIG_KEY_RE = r"^[A-Za-z][A-Za-z0-9_]*$"
_SIZE_RE = r"^[1-9][0-9]*[kmgKMG]?$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _check_env_names(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not re.fullmatch(_ENV_NAME_RE, k)]
    if bad:
        raise ValueError(
            f"invalid environment variable name(s): {', '.join(bad)} — use letters, "
            "digits and underscores, not starting with a digit"
        )
    return value


# Environment variables a section adds (engine, fabric): names a shell can export.
_EnvVars = Annotated[dict[str, str], AfterValidator(_check_env_names)]


# --- fleet -----------------------------------------------------------------------------


class HostSpec(_Model):
    """One host of an SSH fleet (bare metal you own or rent), or this machine."""

    name: str = Field(
        pattern=_NAME_RE,
        description="Short unique label for the host (lowercase, digits, dashes); used in "
        "resource names, logs and errors.",
    )
    connection: Literal["ssh", "local"] = Field(
        "ssh",
        description="'ssh' reaches the host over SSH; 'local' runs commands on the machine "
        "that runs amdfleet (the `local` stack).",
    )
    address: str | None = Field(
        None, description="IP address or DNS name the host is reached at (ssh only)."
    )
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field("root", description="SSH user; needs docker access or sudo-less root.")
    key_path: str | None = Field(
        None,
        description="Path to the SSH private key on the machine running amdfleet. The key "
        "is read at connect time and never stored in state or outputs.",
    )
    host_key: str | None = Field(
        None,
        description="Pinned host key: a public key line ('ssh-ed25519 AAAA...') or an "
        "OpenSSH fingerprint ('SHA256:...'). A host presenting another key is refused. "
        "Get it with `ssh-keyscan -t ed25519 HOST | ssh-keygen -lf -`.",
    )
    private_address: str | None = Field(
        None,
        description="Address other nodes use to reach this one (the cluster network); "
        "defaults to `address`.",
    )
    network_interface: str | None = Field(
        None,
        description="Interface you expect to carry inter-node traffic. amdfleet derives "
        "the interface from the host's facts (the one holding the cluster address) and sets "
        "NCCL/GLOO_SOCKET_IFNAME from it; a different one named here fails the cluster "
        "check before anything starts.",
    )
    rdma_devices: tuple[str, ...] = Field(
        (),
        description="RDMA HCAs for RCCL (NCCL_IB_HCA), e.g. ['ionic_0', 'ionic_1']; empty "
        "means RCCL picks (or falls back to TCP sockets).",
    )

    @field_validator("address", "private_address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)

    @field_validator("host_key")
    @classmethod
    def _unpadded_fingerprint(cls, value: str | None) -> str | None:
        # ssh-keygen prints fingerprints unpadded; a pasted '=' would never match one.
        if value is not None and re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=", value):
            return value[:-1]
        return value

    @model_validator(mode="after")
    def _ssh_fields(self) -> HostSpec:
        if self.connection == "ssh":
            missing = [f for f in ("address", "key_path", "host_key") if not getattr(self, f)]
            if missing:
                raise ValueError(
                    f"ssh host '{self.name}' needs {', '.join(missing)} — add "
                    f"{', '.join(missing)}; pin host_key with `ssh-keyscan -t ed25519 "
                    "HOST | ssh-keygen -lf -` (amdfleet never trusts a key on first use)"
                )
        if self.host_key is not None:
            check_host_key(self.host_key)
        return self

    @property
    def cluster_address(self) -> str | None:
        """The address other nodes use for this host."""
        return self.private_address or self.address


class CloudFleetSpec(_Model):
    """Instances rented through a cloud provider's API, one per node.

    amdfleet creates them on ``pulumi up`` (tagged with project, stack and node), pins
    each one's SSH host key before the first connection (it generates the key and
    injects it through cloud-init user-data), and deletes them on ``pulumi destroy``.
    """

    provider: Literal["digitalocean", "vultr", "hotaisle"] = Field(
        description="Cloud whose API creates the instances."
    )
    region: str = Field(min_length=1, description="Provider region or datacenter slug.")
    plan: str = Field(
        min_length=1,
        description="Provider size / plan slug (e.g. gpu-mi300x8-1536gb); checked against "
        "the topology with the size table in amdfleet's catalog.",
    )
    count: int = Field(1, ge=1, le=64, description="Number of instances (one per node).")
    ssh_key_path: str = Field(
        description="Private key amdfleet connects with; its public half is installed on "
        "the instances through user-data (or the cloud's SSH-key API). Read at deploy time, "
        "never stored."
    )
    api_token_secret: str = Field(
        pattern=_CONFIG_KEY_RE,
        description="Name of the secret config key holding the provider API token.",
    )
    image: str | None = Field(
        None,
        description="Provider image (DigitalOcean image slug, Vultr image id); default: the "
        "catalog's ROCm image for the cloud.",
    )
    user: str | None = Field(
        None,
        description="SSH user of the cloud image; default: the catalog's for the cloud "
        "(root on DigitalOcean and Vultr, hotaisle on Hot Aisle).",
    )
    team: str | None = Field(
        None, description="Hot Aisle team handle the VMs belong to (Hot Aisle only)."
    )
    api_url: str | None = Field(
        None,
        description="Base URL of the provider API, for a proxy or a test server; default: "
        "the provider's public endpoint. https, or http on a loopback address only.",
    )
    trust_first_use: bool = Field(
        False,
        description="Clouds that take no user-data (Hot Aisle) cannot have amdfleet's host "
        "key injected: set true to accept and pin the key the instance shows on its first "
        "connection. Never the default.",
    )
    boot_timeout_s: float | None = Field(
        None,
        gt=0,
        description="How long an instance may take to reach running and answer SSH; "
        "default: the catalog's per cloud (bare metal boots slower than VMs).",
    )
    max_hourly_usd: float | None = Field(
        None, gt=0, description="Refuse a fleet whose price per hour is above this."
    )
    max_total_usd: float | None = Field(
        None,
        gt=0,
        description="Refuse a fleet whose price over campaign.ttl_hours is above this "
        "(needs campaign.ttl_hours).",
    )

    @field_validator("api_url")
    @classmethod
    def _api_url_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        host = parts.hostname or ""
        loopback = host == "localhost" or host.startswith("127.") or host == "::1"
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return value.rstrip("/")
        raise ValueError(
            f"api_url must be https:// (or http:// on a loopback address), got {value!r} — "
            "the API token travels in its requests"
        )


class FleetSpec(_Model):
    """Where the engine runs: SSH hosts, or cloud instances. Exactly one of the two."""

    hosts: tuple[HostSpec, ...] = Field(
        (), description="SSH (or local) hosts, one per node, rank 0 (the head) first."
    )
    cloud: CloudFleetSpec | None = Field(None, description="Cloud instances to create.")

    @model_validator(mode="after")
    def _one_kind(self) -> FleetSpec:
        if bool(self.hosts) == (self.cloud is not None):
            raise ValueError(
                "the fleet needs exactly one of hosts or cloud — list SSH/local hosts "
                "under fleet.hosts, or describe instances under fleet.cloud"
            )
        names = [h.name for h in self.hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"host names must be unique; repeated: {', '.join(dupes)} — rename them"
            )
        if any(h.connection == "local" for h in self.hosts) and len(self.hosts) > 1:
            raise ValueError(
                "a 'local' host cannot be combined with other hosts — use ssh hosts "
                "for multi-node fleets"
            )
        return self

    @field_validator("hosts")
    @classmethod
    def _distinct_addresses(cls, hosts: tuple[HostSpec, ...]) -> tuple[HostSpec, ...]:
        seen: dict[tuple[str, int], str] = {}
        for host in hosts:
            if host.connection != "ssh" or not host.address:
                continue
            where = (canonical_address(host.address), host.port)
            if where in seen:
                raise ValueError(
                    f"hosts '{seen[where]}' and '{host.name}' are both {host.address} port "
                    f"{host.port}: both ranks would be planned onto one machine — give each "
                    "node its own address (or remove the duplicate and lower topology.nodes)"
                )
            seen[where] = host.name
        return hosts

    @property
    def node_count(self) -> int:
        """How many nodes the fleet provides."""
        return self.cloud.count if self.cloud else len(self.hosts)


# --- what runs ---------------------------------------------------------------------------


class Topology(_Model):
    """The hardware shape the stack asks for; preflight checks the hosts match it."""

    accelerator: str = Field(
        description="Accelerator id from the catalog: mi300x, mi325x, mi350x, mi355x, or "
        "cpu (vLLM's CPU backend, for the local stack)."
    )
    nodes: int = Field(1, ge=1, le=64, description="Number of nodes.")
    gpus_per_node: int = Field(
        8, ge=1, le=8, description="Accelerators used on each node (1, 2, 4 or 8)."
    )


class ModelArchitecture(_Model):
    """Architecture numbers for a model the catalog does not know (memory math needs them)."""

    params_b: float = Field(gt=0, description="Parameters, in billions.")
    layers: int = Field(ge=1, description="Transformer layers.")
    hidden: int = Field(ge=1, description="Hidden size.")
    intermediate: int = Field(ge=1, description="MLP intermediate size.")
    heads: int = Field(ge=1, description="Attention heads.")
    kv_heads: int = Field(ge=1, description="Key/value heads (GQA groups).")
    head_dim: int = Field(ge=1, description="Per-head dimension.")
    vocab: int = Field(ge=1, description="Vocabulary size.")
    max_context: int = Field(ge=1, description="Maximum context length, tokens.")


class ModelSpec(_Model):
    """The model to serve."""

    id: str = Field(
        min_length=1,
        description="Catalog id (e.g. 'llama-3.3-70b-instruct') or a Hugging Face repo "
        "(e.g. 'meta-llama/Llama-3.3-70B-Instruct'); a repo outside the catalog needs "
        "`architecture`.",
    )
    precision: Precision = Field(
        "bf16",
        description="Weight precision: bf16, fp8 (gfx942/gfx950) or mxfp4 (gfx950 only).",
    )
    checkpoint: str | None = Field(
        None,
        description="Override the catalog checkpoint: a Hugging Face repo or an absolute "
        "path on the hosts. A BF16 checkpoint with precision fp8 is quantized online "
        "(`--quantization fp8`).",
    )
    revision: str | None = Field(
        None, description="Hub revision (commit sha, tag or branch) to stage and serve."
    )
    served_name: str | None = Field(
        None, description="Model name clients send; defaults to the checkpoint id."
    )
    architecture: ModelArchitecture | None = Field(
        None, description="Architecture numbers for a model that is not in the catalog."
    )


class EngineSpec(_Model):
    """The serving engine and how it is run."""

    name: str = Field(
        "vllm", description="Serving engine, one of the catalog's: vllm, sglang or tgi."
    )
    image: str | None = Field(
        None, description="Container image; defaults to the catalog image for engine/arch."
    )
    version: str | None = Field(
        None,
        description="Engine release to run, one the catalog pins (its image, and the manifest "
        "of flags and variables the command is checked against); default: the catalog's "
        "release for the arch. With `image` set, the version that image runs.",
    )
    runtime: Runtime = Field(
        "docker",
        description="'docker' runs the image with ROCm device flags; 'process' runs the "
        "engine executable directly with an env file.",
    )
    executable: str | None = Field(
        None,
        description="Engine command for the process runtime (e.g. '/opt/venv/bin/vllm'); "
        "defaults to the engine's CLI name on PATH.",
    )
    recipe: bool = Field(
        True,
        description="Apply the catalog's recipe flags and env for (engine, arch, "
        "precision); set false to pass only your own extra_args/extra_env.",
    )
    extra_args: tuple[str, ...] = Field(
        (), description="Extra engine arguments, appended last (they win over the recipe)."
    )
    extra_env: _EnvVars = Field(
        default_factory=dict, description="Extra environment variables (override recipe)."
    )
    network: Literal["host", "bridge"] = Field(
        "host",
        description="Container network: 'host' (required for multi-node) or 'bridge' with "
        "the serving port published.",
    )
    ipc: Literal["host", "private"] = Field(
        "host", description="Container IPC namespace; 'private' uses `shm_size`."
    )
    shm_size: str = Field(
        "16g", pattern=_SIZE_RE, description="Container /dev/shm size when ipc is private."
    )
    startup_timeout_s: int | None = Field(
        None,
        ge=30,
        description="Deadline for /health after start; defaults to one sized to the model.",
    )

    @field_validator("name")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        # Imported here: the catalog's model tables import this module's types.
        from amdfleet.catalog.engines import ENGINES

        if value not in ENGINES:
            names = [f"'{name}'" for name in ENGINES]
            raise ValueError(
                f"unknown engine {value!r} — use {', '.join(names[:-1])} or {names[-1]}"
            )
        return value


class ParallelismSpec(_Model):
    """How the model is split over the GPUs: tp × pp × dp must equal nodes × GPUs."""

    tp: int = Field(1, ge=1, description="Tensor-parallel size.")
    pp: int = Field(1, ge=1, description="Pipeline-parallel size (layers split in stages).")
    dp: int = Field(1, ge=1, description="Data-parallel replicas.")
    backend: Literal["mp", "ray"] = Field(
        "mp",
        description="vLLM multi-node executor: 'mp' (multiprocessing, --nnodes/--headless) "
        "or 'ray' (a Ray cluster started first).",
    )
    master_port: int = Field(
        29500, ge=1024, le=65535, description="Rendezvous port on the head node."
    )
    ray_port: int = Field(6379, ge=1024, le=65535, description="Ray GCS port (backend ray).")


class ServingSpec(_Model):
    """The OpenAI-compatible endpoint."""

    host: str = Field(
        "0.0.0.0",
        description="Address the engine listens on: an IPv4 or IPv6 address ('::' for "
        "all IPv6 interfaces) or a host name.",
    )
    port: int = Field(8000, ge=1, le=65535, description="Port the engine listens on.")
    api_key_secret: str | None = Field(
        "apiKey",
        pattern=_CONFIG_KEY_RE,
        description="Name of the secret config key with the API key clients must send "
        "(`openssl rand -hex 24 | pulumi config set --secret apiKey`); null serves without "
        "authentication.",
    )
    max_model_len: int | None = Field(
        None, ge=256, description="Maximum context per request; defaults to the model's."
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Maximum concurrent sequences; engine default if unset."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=256, description="Tokens per scheduler step (vLLM)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Activation and weight dtype the engine computes in (--dtype). 'auto': "
        "the checkpoint's own dtype on GPUs; float32 on CPUs, the one dtype every CPU "
        "computes correctly (vLLM's bfloat16 CPU path needs AVX-512 BF16; without it the "
        "output is garbage, measured here). An explicit bfloat16 on a CPU host without "
        "avx512_bf16 or amx_bf16 fails the host check.",
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", description="KV-cache dtype: 'auto' (model dtype) or 'fp8'."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.1, le=0.98, description="Fraction of GPU memory the engine may use."
    )
    min_full_context_seqs: int = Field(
        1,
        ge=1,
        description="How many sequences at max_model_len the KV cache must hold at once; "
        "the planner rejects a layout that cannot.",
    )

    @field_validator("host")
    @classmethod
    def _host_form(cls, value: str) -> str:
        return check_address(value)


def _build_host_kind(value: Any) -> str:
    return _SSH_HOST_TAG if isinstance(value, dict | HostSpec) else _HOST_NAME_TAG


_HOST_NAME_TAG = "<host name>"
_SSH_HOST_TAG = "<ssh host>"
BuildHost = Annotated[
    Annotated[str, Tag(_HOST_NAME_TAG), Field(pattern=_NAME_RE)]
    | Annotated[HostSpec, Tag(_SSH_HOST_TAG)],
    Discriminator(_build_host_kind),
]
"""A fleet host's name, or a separate SSH host. Validation errors name the field without
the variant (``image_build.build_host.address``): the tags are dropped from their paths."""
_REGISTRY_ADDRESS_RE = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
_REPOSITORY_RE = r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"


class RegistrySpec(_Model):
    """The registry a built engine image is pushed to, and every node pulls it from."""

    address: str = Field(
        pattern=_REGISTRY_ADDRESS_RE,
        description="Registry host and optional port, as docker names it "
        "('registry.example.com', '10.0.0.5:5000'). A plain-HTTP registry must be in each "
        "node's and the build host's dockerd `insecure-registries`.",
    )
    repository: str = Field(
        "amdfleet/vllm-aiter",
        pattern=_REPOSITORY_RE,
        description="Repository inside the registry; the tag is the build's content hash.",
    )
    username: str | None = Field(
        None, description="User to log in as; None pushes and pulls without logging in."
    )
    password_secret: str | None = Field(
        None,
        pattern=_CONFIG_KEY_RE,
        description="Name of the secret config key holding the registry password or token "
        "(`pulumi config set --secret KEY`). It is given to `docker login` on stdin, in a "
        "throwaway docker config that is removed after each push or pull.",
    )

    @model_validator(mode="after")
    def _credentials_pair(self) -> RegistrySpec:
        if (self.username is None) != (self.password_secret is None):
            raise ValueError(
                "username and password_secret go together — set both to log in, or "
                "neither for a registry that needs no login"
            )
        return self


class ImageBuildSpec(_Model):
    """Build the engine image (AITER + vLLM from source): once on a build host and pushed
    when a registry is set, else on every node."""

    enabled: bool = Field(False, description="Build instead of pulling `engine.image`.")
    base_image: str | None = Field(
        None,
        description="Image the build starts FROM: a versioned tag or a digest, never a moving "
        "tag (latest, nightly), which would change the build under the same content tag. "
        "Default: the catalog's release image of the pinned vLLM.",
    )
    aiter_ref: str | None = Field(
        None,
        description="AITER to build: a release tag the catalog pins to its commit, or a full "
        "40-hex commit; never a branch. Default: the AITER commit the pinned vLLM release "
        "builds with.",
    )
    vllm_ref: str | None = Field(
        None,
        description="vLLM to build: a release tag the catalog pins to its commit (v0.32.0), "
        "or a full 40-hex commit; never a branch. Default: the catalog's vLLM release.",
    )
    gfx_targets: tuple[str, ...] = Field(
        (), description="PYTORCH_ROCM_ARCH targets; defaults to the accelerator's arch."
    )
    registry: RegistrySpec | None = Field(
        None,
        description="Where the image is pushed. With a registry the image is built once on "
        "`build_host`, tagged with the build's content hash, pushed, and every node pulls "
        "the same digest. Without one, every node builds the image itself (the plan warns "
        "that nodes may then differ).",
    )
    build_host: BuildHost | None = Field(
        None,
        description="Where the build runs when a registry is set: the name of one of the "
        "fleet's hosts, or a separate SSH host (a host entry like fleet.hosts'). Default: "
        "the head node.",
    )
    timeout_s: int = Field(
        6 * 3600,
        gt=0,
        description="Deadline of one build, in seconds; a build still running then is "
        "stopped and its context removed.",
    )
    work_dir: str = Field(
        "/var/tmp/amdfleet-image-build",
        pattern=r"^/",
        description="Absolute directory on the build host for build contexts (removed after "
        "each build) and build logs (`<tag>.log`, kept until the stack is destroyed).",
    )


class WeightsSpec(_Model):
    """Where weights are staged on every node."""

    cache_dir: str = Field(
        "/var/cache/amdfleet/huggingface",
        description="Hugging Face cache directory, the same absolute path on every node; "
        "mounted into containers.",
    )
    container_dir: str = Field(
        "/root/.cache/huggingface",
        description="Where cache_dir is mounted inside the engine container (HF_HOME there).",
    )
    hf_token_secret: str | None = Field(
        None,
        pattern=_CONFIG_KEY_RE,
        description="Name of the secret config key holding a Hugging Face token; needed "
        "for gated repos (meta-llama/*).",
    )
    local_path: str | None = Field(
        None,
        description="Weights already on the hosts at this absolute path (offline hosts); "
        "nothing is downloaded.",
    )
    download_timeout_s: int = Field(
        7200, ge=60, description="Deadline for staging the weights on a node."
    )
    hub_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Hugging Face Hub endpoint to download from (a mirror or proxy; "
        "HF_ENDPOINT); the public hub when unset.",
    )

    @field_validator("cache_dir", "local_path", "container_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(
                f"must be an absolute path, got {value!r} — use a path starting with '/' "
                "that is the same on every node"
            )
        return value


# --- verification -------------------------------------------------------------------------


class BenchmarkScenario(_Model):
    """One serving-benchmark run, like one `vllm bench serve` invocation."""

    name: str = Field(pattern=_NAME_RE, description="Scenario label in reports.")
    dataset: Literal["random", "sharegpt", "prompts"] = Field(
        "random",
        description="'random' prompts of exact token lengths, a ShareGPT json file, or a "
        "file of fixed prompts (one per line).",
    )
    dataset_path: str | None = Field(
        None, description="Path to the ShareGPT or prompts file (required for those)."
    )
    input_len: int = Field(1024, ge=1, description="Prompt tokens (random dataset).")
    output_len: int = Field(128, ge=1, description="Generated tokens per request.")
    range_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Length spread: lengths uniform in len×(1±ratio)."
    )
    num_prompts: int = Field(100, ge=1, description="Requests to send.")
    max_concurrency: int | None = Field(
        None, ge=1, description="Cap on in-flight requests (None = no cap)."
    )
    request_rate: float | None = Field(
        None, gt=0, description="Arrival rate, requests/s (None = all at once)."
    )
    burstiness: float = Field(
        1.0, gt=0, description="Gamma shape for arrivals; 1.0 is a Poisson process."
    )
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="/v1/completions or /v1/chat/completions."
    )
    ignore_eos: bool = Field(True, description="Generate exactly output_len tokens.")
    seed: int = Field(0, description="Seed for prompts and arrivals.")
    baseline: str | None = Field(
        None,
        description="Catalog baseline for this scenario (overrides verification.baseline).",
    )
    min_output_throughput: float | None = Field(
        None,
        gt=0,
        description="Minimum output tokens/s for this scenario (overrides the stack-wide "
        "threshold; sweeps need one per load level).",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> BenchmarkScenario:
        if self.dataset != "random" and not self.dataset_path:
            raise ValueError(
                f"dataset '{self.dataset}' needs dataset_path — set it to the "
                f"{self.dataset} file, or use dataset: random"
            )
        return self


class AccuracySpec(_Model):
    """An accuracy check, scored as lm-evaluation-harness scores it."""

    task: Literal["gsm8k"] = Field("gsm8k", description="Task (GSM8K, 5-shot).")
    num_fewshot: int = Field(5, ge=0, le=8, description="Few-shot examples per prompt.")
    limit: int | None = Field(
        None, ge=1, description="Score only the first N test problems (quick checks)."
    )
    data_path: str | None = Field(
        None,
        description="Directory with GSM8K test.jsonl/train.jsonl; downloaded from the "
        "public source when unset and online.",
    )
    concurrency: int = Field(32, ge=1, description="Requests in flight while scoring.")
    max_tokens: int = Field(256, ge=1, description="Generation budget per problem.")


class ParitySpec(_Model):
    """Output parity: the engine's greedy continuations of amdfleet's fixed prompt set,
    token ids compared with a reference recorded for the same model and revision."""

    reference: str = Field(
        description="The reference file (JSON, `amdfleet parity record` or scripts/setup "
        "write one): an absolute path, or one relative to the project directory (where "
        "Pulumi.yaml is), e.g. stacks/references/<stack>.json kept with the stack."
    )
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None,
        description="Which of the reference's recorded dtypes to compare with; default: "
        "the dtype the stack serves (serving.dtype as the plan resolves it).",
    )
    tokens: int = Field(
        16, ge=1, le=256, description="Compare the first K generated tokens of each prompt."
    )
    min_match: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Minimum share of prompts whose first `tokens` tokens match the "
        "reference exactly.",
    )
    concurrency: int = Field(4, ge=1, description="Prompts in flight.")


def _no_zero(value: float | None, info: ValidationInfo) -> float | None:
    if value is not None and value <= 0:
        leave_out = (
            ""
            if info.field_name == "min_success_rate"
            else f", or leave {info.field_name} out to report the metric without gating on it"
        )
        raise ValueError(
            f"a threshold of {value:g} cannot fail — set a level a broken deployment "
            f"falls below{leave_out}"
        )
    return value


class Thresholds(_Model):
    """What the verification must meet for the stack to be marked ready. A threshold
    must be able to fail: zero is refused."""

    min_success_rate: float = Field(
        1.0, le=1, description="Minimum fraction of benchmark requests that succeed."
    )
    min_output_throughput: float | None = Field(
        None, description="Minimum output tokens/s (each scenario)."
    )
    max_p99_ttft_ms: float | None = Field(None, gt=0, description="Maximum p99 TTFT, ms.")
    max_p99_tpot_ms: float | None = Field(None, gt=0, description="Maximum p99 TPOT, ms.")
    min_flexible_accuracy: float | None = Field(
        None,
        le=1,
        description="Minimum GSM8K flexible-extract exact match; unset, the accuracy task "
        "is reported without gating (a smoke test).",
    )
    min_strict_accuracy: float | None = Field(
        None, le=1, description="Minimum GSM8K strict-match exact match."
    )

    _positive = field_validator(
        "min_success_rate",
        "min_output_throughput",
        "min_flexible_accuracy",
        "min_strict_accuracy",
    )(_no_zero)


class VerificationSpec(_Model):
    """The gate between 'deployed' and 'ready'."""

    enabled: bool = Field(True, description="Run verification after the engine is up.")
    scenarios: tuple[BenchmarkScenario, ...] = Field(
        (), description="Serving benchmarks to run, in order."
    )
    accuracy: AccuracySpec | None = Field(None, description="Accuracy check to run.")
    parity: ParitySpec | None = Field(
        None,
        description="Output-parity check against a recorded reference; it runs first, and "
        "a failed one stops the verification (an engine computing the wrong tokens has no "
        "performance worth measuring).",
    )
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Pass/fail thresholds.")
    baseline: str | None = Field(
        None,
        description="Catalog baseline id (a seed's published numbers) to compare against.",
    )
    request_timeout_s: float = Field(
        600, gt=0, description="Per-request timeout during verification."
    )
    allow_no_benchmark: bool = Field(
        False,
        description="Let an enabled verification run no benchmark scenario (e.g. accuracy "
        "only); without it a verification block with no scenario is rejected, since the "
        "gate would pass having measured no serving performance.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> VerificationSpec:
        names = [s.name for s in self.scenarios]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"scenario names must be unique; repeated: {', '.join(dupes)} — rename them"
            )
        return self


class CampaignSpec(_Model):
    """The benchmark campaign's lifetime."""

    ttl_hours: float | None = Field(
        None,
        gt=0,
        description="Planned lifetime from the engine's start; the `campaign` stack output "
        "carries the resulting `expires_at`.",
    )
    on_expiry: Literal["warn", "destroy"] = Field(
        "warn",
        description="What should happen past `expires_at`: 'warn' or 'destroy'. Recorded in "
        "the `campaign` output; `amdfleet reap` (run from cron or a systemd timer, see "
        "docs/reap.md) acts on it. Nothing destroys a stack unless reap is scheduled.",
    )
    keep_weights: bool = Field(
        False,
        description="Keep the staged weights on destroy (faster next campaign); by "
        "default destroy leaves nothing on the hosts.",
    )
    owner: str | None = Field(None, description="Who to ask before destroying.")


# --- fabric check (issue 10, item 7) -------------------------------------------------------


class FabricSpec(_Model):
    """An optional collective-bandwidth test across the nodes, run before the engine starts:
    rccl-tests' ``all_reduce_perf`` on GPU fleets, a ``torch.distributed`` gloo all-reduce
    sweep on CPU stacks; both gated on the bus bandwidth at one message size.

    Sizes use all_reduce_perf's own syntax (``-b``/``-e``): bytes, or a number with K, M
    or G meaning 1024, 1024² or 1024³ bytes. The sweep doubles from min_size to max_size
    (``-f 2``), so gate_size must be min_size times a power of two, at most max_size.
    """

    enabled: bool = Field(
        False, description="Run the fabric check on every node before the engine starts."
    )
    min_busbw_gbps: float | None = Field(
        None,
        gt=0,
        description="Minimum in-place bus bandwidth, GB/s (10^9 bytes/s), at gate_size; null "
        "records the sweep without gating. AMD's acceptance guide asks >= 304 GB/s for "
        "MI300X/MI325X and >= 350 GB/s for MI350X/MI355X at 8 GB on one 8-GPU node.",
    )
    min_size: str | None = Field(
        None,
        description="Smallest message of the sweep (all_reduce_perf -b); default 8 on GPU "
        "fleets (AMD's acceptance command), 1K on CPU.",
    )
    max_size: str | None = Field(
        None,
        description="Largest message of the sweep (all_reduce_perf -e); default 8G on GPU "
        "fleets, 64M on CPU.",
    )
    gate_size: str | None = Field(
        None,
        description="Message size whose in-place busbw is gated: a size of the sweep; default "
        "8G on GPU fleets (where AMD's thresholds apply), max_size on CPU.",
    )
    iters: int = Field(20, ge=1, le=1000, description="Timed iterations per size (-n).")
    warmup_iters: int = Field(5, ge=0, le=1000, description="Warm-up iterations (-w).")
    timeout_s: int = Field(
        1800, ge=30, description="Deadline for the whole check on every node, seconds."
    )
    port: int = Field(
        29700,
        ge=1024,
        le=65535,
        description="TCP port of the gloo rendezvous on the head (CPU stacks).",
    )
    all_reduce_perf: str = Field(
        "all_reduce_perf",
        min_length=1,
        description="rccl-tests' all_reduce_perf in the engine image (docker runtime) or on "
        "the hosts (process runtime): a path, or a name on PATH.",
    )
    mpirun: str = Field(
        "mpirun",
        min_length=1,
        description="OpenMPI's mpirun for multi-node GPU fleets, run on the head (in the "
        "engine image with the docker runtime). It starts the other nodes' ranks itself (over "
        "ssh unless mpirun_args say otherwise): the head must reach them that way and find "
        "all_reduce_perf at the same path there.",
    )
    mpirun_args: tuple[str, ...] = Field(
        (),
        description="Extra mpirun arguments for the fabric, e.g. ['--mca', 'pml', 'ucx'] as "
        "the recorded AAC10 2-node MI300X run used.",
    )
    extra_env: _EnvVars = Field(
        default_factory=dict,
        description="Environment for every rank (e.g. NCCL_IB_GID_INDEX: '3'); the nodes' "
        "NCCL/GLOO_SOCKET_IFNAME and NCCL_IB_HCA come from fleet.hosts.",
    )

    @field_validator("min_size", "max_size", "gate_size", mode="before")
    @classmethod
    def _size_form(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip()
        if not re.fullmatch(_SIZE_RE, text):
            raise ValueError(
                f"size {value!r} is not a size all_reduce_perf reads — use bytes (8) or a "
                "number with K, M or G (1K = 1024 bytes, 8G = 8 GiB)"
            )
        return text


def size_bytes(size: str) -> int:
    """A size in all_reduce_perf's syntax as bytes (K, M and G are powers of 1024, as
    rccl-tests' ``parsesize`` reads them)."""
    text = size.strip()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    scale = units.get(text[-1].lower(), 1)
    return int(text.rstrip("kmgKMG")) * scale


# --- the whole stack ---------------------------------------------------------------------------


class StackSpec(_Model):
    """A whole stack: one `Pulumi.<stack>.yaml` under `stacks/`."""

    name: str = Field(pattern=_NAME_RE, description="Stack name.")
    description: str = Field("", description="One line saying what the stack runs.")
    fleet: FleetSpec = Field(description="Hosts or cloud instances.")
    topology: Topology = Field(description="Accelerator model and counts.")
    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Serving engine.")
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec, description="TP/PP/DP layout."
    )
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Endpoint.")
    image_build: ImageBuildSpec = Field(
        default_factory=ImageBuildSpec, description="Optional image build."
    )
    weights: WeightsSpec = Field(default_factory=WeightsSpec, description="Weight staging.")
    verification: VerificationSpec = Field(
        default_factory=VerificationSpec, description="Benchmark + accuracy gate."
    )
    campaign: CampaignSpec = Field(
        default_factory=CampaignSpec, description="Lifetime and teardown policy."
    )
    fabric: FabricSpec = Field(
        default_factory=FabricSpec,
        description="Optional collective-bandwidth test across the nodes before deploying.",
    )

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """Names of the secret config keys this stack needs."""
        keys = [self.serving.api_key_secret, self.weights.hf_token_secret]
        registry = self.image_build.registry
        if registry is not None and self.image_build.enabled:
            keys.append(registry.password_secret)
        if self.fleet.cloud:
            keys.append(self.fleet.cloud.api_token_secret)
        return tuple(k for k in keys if k)


SECTIONS: tuple[str, ...] = tuple(
    name for name in StackSpec.model_fields if name not in ("name", "description")
)


# --- loading -----------------------------------------------------------------------------


class SecretRef(BaseModel):
    """A secret config key: whether it is set (encrypted), never its value."""

    model_config = ConfigDict(frozen=True)

    key: str
    present: bool


class LoadedStack(BaseModel):
    """A validated stack plus the state of the secrets it references."""

    model_config = ConfigDict(frozen=True)

    spec: StackSpec
    source: str
    secrets: tuple[SecretRef, ...]

    @property
    def missing_secrets(self) -> tuple[str, ...]:
        """Secret keys the stack references but the stack file does not set."""
        return tuple(s.key for s in self.secrets if not s.present)


def stack_path(name_or_path: str, stacks_dir: Path = STACKS_DIR) -> Path:
    """Resolve a stack name ('mi355x-llama70b') or a path to a stack file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return candidate
    return stacks_dir / f"Pulumi.{name_or_path}.yaml"


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    """Names of the stacks in ``stacks_dir``, sorted."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def load_stack_file(name_or_path: str, stacks_dir: Path = STACKS_DIR) -> LoadedStack:
    """Load and validate a stack file without Pulumi.

    Raises :class:`ConfigError` listing every problem (with field paths and hints) if the
    file is missing, is not YAML, has unknown or mistyped keys, or stores a secret key
    in plain text.
    """
    path = stack_path(name_or_path, stacks_dir)
    if not path.is_file():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise ConfigError(
            [ConfigIssue("stack", f"no stack file at {path}", f"known stacks: {known}")]
        )
    try:
        document = _load_yaml(path.read_text(), source=str(path))
    except yaml.YAMLError as e:
        raise ConfigError(
            [
                ConfigIssue(
                    "file",
                    f"not valid YAML: {secretscan.redact(str(e))}",
                    "indent with spaces (never tabs) and quote values containing ': '",
                )
            ],
            str(path),
        ) from e
    name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    values, secrets, issues = _split_config(document, source=str(path))
    if issues:
        raise ConfigError(issues, str(path))
    plain_secrets = {k: values.pop(k) for k in _declared_secret_keys(values) if k in values}
    spec = parse_stack(name, values, source=str(path))
    refs = _secret_refs(spec, secrets, plain_secrets, source=str(path))
    return LoadedStack(spec=spec, source=str(path), secrets=refs)


def parse_stack(name: str, sections: Mapping[str, Any], source: str = "") -> StackSpec:
    """Validate the ``amdfleet:*`` sections of a stack into a :class:`StackSpec`."""
    valid = (*SECTIONS, "description")
    issues = [unknown_key_issue(k, valid) for k in sections if k not in valid]
    data = {"name": name, **{k: v for k, v in sections.items() if k in valid}}
    # A secret pasted into a plain field is rejected first, and never echoed.
    found = secretscan.find_secrets(data)
    try:
        spec = StackSpec.model_validate(data)
    except ValidationError as e:
        invalid = _issues_from_validation(e, data)
        issues += [_stack_name_issue(name) if i.path == "name" else i for i in invalid]
    if issues or found:
        raise ConfigError(secretscan.screen_issues(issues, found), source)
    return spec


def load_from_pulumi() -> tuple[StackSpec, dict[str, Any]]:
    """Read the stack through ``pulumi.Config`` inside a Pulumi program.

    Returns the spec and a mapping of secret key → ``pulumi.Output`` (secret). Raises
    :class:`ConfigError` when a key is unknown or invalid, when a secret is stored in
    plain text, or when a referenced secret is not set: before any resource exists.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    config = pulumi.Config(NAMESPACE)
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    keys = sorted(k.split(":", 1)[1] for k in everything if k.startswith(f"{NAMESPACE}:"))
    secret = {k for k in keys if runtime_config.is_config_secret(f"{NAMESPACE}:{k}")}
    values = {k: _config_value(config.get(k)) for k in keys if k not in secret}
    plain_secrets = {k: values.pop(k) for k in _declared_secret_keys(values) if k in values}
    source = f"stack {pulumi.get_stack()}"
    spec = parse_stack(pulumi.get_stack(), values, source=source)
    refs = _secret_refs(spec, {k: True for k in secret}, plain_secrets, source=source)
    missing = [_missing_secret_issue(spec, ref.key) for ref in refs if not ref.present]
    if missing:
        raise ConfigError(missing, source)
    return spec, {key: config.get_secret(key) for key in spec.secret_keys}


# --- helpers ---------------------------------------------------------------------------------


def _config_value(text: str | None) -> Any:
    """A config value as the engine stores it: JSON for structured values, else text."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_config(
    document: Any, source: str
) -> tuple[dict[str, Any], dict[str, Any], list[ConfigIssue]]:
    if isinstance(document, dict) and document and "config" not in document:
        return {}, {}, [_no_config_wrapper_issue(document)]
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        return {}, {}, [ConfigIssue("config", "the file must be a mapping with a 'config:' key")]
    values: dict[str, Any] = {}
    secure: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for raw_key, value in (document.get("config") or {}).items():
        namespace, _, key = str(raw_key).partition(":")
        if namespace != NAMESPACE or not key:
            issues.append(_foreign_key_issue(str(raw_key), key or namespace))
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secure[key] = value
        else:
            values[key] = value
    return values, secure, issues


def _foreign_key_issue(raw_key: str, key: str) -> ConfigIssue:
    why = secretscan.describe(raw_key)
    if why:  # a value pasted as a key: named by where it is, never echoed
        return ConfigIssue(
            "config", f"a key holds {why}; a stack file is not secret", secretscan.HINT
        )
    return ConfigIssue(
        raw_key, "keys must be in the 'amdfleet' namespace", f"write it as 'amdfleet:{key}'"
    )


def _no_config_wrapper_issue(document: Mapping[Any, Any]) -> ConfigIssue:
    keys = [str(k) for k in document]
    sections = [k.removeprefix(f"{NAMESPACE}:") for k in keys]
    looks_like_settings = any(k in (*SECTIONS, "description") for k in sections)
    found = f"; its top-level keys are {', '.join(keys[:6])}" if looks_like_settings else ""
    return ConfigIssue(
        "config",
        f"the file has no 'config:' key{found}",
        "put the settings under a top-level 'config:' key, each section as an "
        "'amdfleet:<section>' key indented below it (e.g. 'config:' then '  amdfleet:fleet:')",
    )


def _stack_name_issue(name: str) -> ConfigIssue:
    suggestion = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "my-stack"
    return ConfigIssue(
        "name",
        f"stack name {name!r} is not lower-case letters, digits and dashes (the name comes "
        "from the stack file name Pulumi.<name>.yaml, or the Pulumi stack name)",
        f"rename the file to Pulumi.{suggestion}.yaml (and the Pulumi stack to {suggestion})",
    )


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that records every mapping key written twice (YAML lets the later one
    silently win) with its path and both line numbers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.paths: dict[int, tuple[str, ...]] = {}
        self.duplicates: list[tuple[tuple[str, ...], int, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        path = self.paths.get(id(node), ())
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            self.paths[id(value_node)] = (*path, key)
            line = key_node.start_mark.line + 1
            if key in first_line and key != "<<":
                self.duplicates.append(((*path, key), first_line[key], line))
            first_line.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        path = self.paths.get(id(node), ())
        for i, child in enumerate(node.value):
            self.paths[id(child)] = (*path, f"[{i}]")
        return super().construct_sequence(node, deep=deep)


def _load_yaml(text: str, source: str) -> Any:
    """Parse a stack file; a key written twice in one mapping is a ConfigError."""
    loader = _StrictLoader(text)
    try:
        document = loader.get_single_data() or {}
    finally:
        loader.dispose()
    if loader.duplicates:
        found = sorted(loader.duplicates, key=lambda d: d[1])  # in file order
        raise ConfigError([_duplicate_key_issue(*d) for d in found], source)
    return document


def _duplicate_key_issue(path: tuple[str, ...], first: int, second: int) -> ConfigIssue:
    return ConfigIssue(
        _yaml_path(path),
        f"written twice, on lines {first} and {second}; YAML would silently keep only the "
        f"second (line {second})",
        "merge the two into one entry and delete the other",
    )


def _yaml_path(path: tuple[str, ...]) -> str:
    """A stack file's key path as issues name fields: ``config`` and the namespace go."""
    parts = list(path)
    if len(parts) > 1 and parts[0] == "config":
        parts = parts[1:]
        section = parts[0].removeprefix(f"{NAMESPACE}:")
        if section in (*SECTIONS, "description"):  # 'amdfleet:serving', 'port' -> serving.port
            parts[0] = section
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else f".{part}"
    return out


def _declared_secret_keys(values: Mapping[str, Any]) -> set[str]:
    """Secret key names the raw sections reference (before validation)."""

    def field(section: str, name: str, default: str | None = None) -> Any:
        raw = values.get(section)
        return raw.get(name, default) if isinstance(raw, dict) else default

    fleet = values.get("fleet")
    cloud = fleet.get("cloud") if isinstance(fleet, dict) else None
    registry = field("image_build", "registry")
    names = [  # a list: a mistyped value (a list, a mapping) is not hashable
        field("serving", "api_key_secret", "apiKey"),
        field("weights", "hf_token_secret"),
        cloud.get("api_token_secret") if isinstance(cloud, dict) else None,
        registry.get("password_secret") if isinstance(registry, dict) else None,
    ]
    return {n for n in names if isinstance(n, str) and n not in SECTIONS}


def _secret_refs(
    spec: StackSpec, secure: Mapping[str, Any], values: Mapping[str, Any], source: str
) -> tuple[SecretRef, ...]:
    plain = [k for k in spec.secret_keys if k in values]
    if plain:
        raise ConfigError(
            [
                ConfigIssue(
                    f"amdfleet:{k}",
                    "secret is stored in plain text",
                    f"remove the line, then run `pulumi config set --secret {k}` and type the "
                    "value at its prompt or pipe it on stdin (a value on the command line "
                    "lands in shell history); rotate it if the file was shared",
                )
                for k in plain
            ],
            source,
        )
    return tuple(SecretRef(key=k, present=k in secure) for k in spec.secret_keys)


def _missing_secret_issue(spec: StackSpec, key: str) -> ConfigIssue:
    return ConfigIssue(
        f"amdfleet:{key}",
        "secret is referenced by the stack but not set",
        f"run `pulumi config set --secret {key} -s {spec.name}` and type the value at its "
        "prompt, or pipe it on stdin (a value on the command line lands in shell history)",
    )


def _issues_from_validation(error: ValidationError, data: Mapping[str, Any]) -> list[ConfigIssue]:
    issues = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in _UNION_TAGS)
        path = field_path(loc)
        if item["type"] == "extra_forbidden":
            parent_model = _model_at(loc[:-1], data)
            valid = list(parent_model.model_fields) if parent_model else []
            issues.append(unknown_key_issue(str(loc[-1]), valid, loc[:-1]))
            continue
        message, _, fix = item["msg"].removeprefix("Value error, ").partition(" — ")
        value = item.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        if fix or secretscan.describe(str(value)) or path.endswith("_secret"):
            shown = ""  # a *_secret field names a secret: what was typed there may be one
        if path.endswith("_secret") and item["type"] == "string_pattern_mismatch":
            message = "must be the name of a secret config key, not its value"
            fix = (
                "put a key name here (letters, digits, _) and set the value with "
                "`pulumi config set --secret KEY` (it prompts, or reads stdin)"
            )
        issues.append(ConfigIssue(path or "stack", message + shown, fix or _hint_for(item)))
    return issues


_UNION_TAGS = (_HOST_NAME_TAG, _SSH_HOST_TAG)


def _model_at(loc: tuple[Any, ...], data: Mapping[str, Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = StackSpec
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _hint_for(item: Mapping[str, Any]) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    if kind == "literal_error":
        return f"use one of {ctx.get('expected', '')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "use a whole number"
    if kind in ("float_parsing", "float_type"):
        return "use a number"
    if kind in ("bool_parsing", "bool_type"):
        return "use true or false"
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"use a value {bounds[kind]} {limit}"
    if kind == "string_pattern_mismatch":
        return f"it must match {ctx.get('pattern', '')}"
    if kind == "missing":
        return "add this key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "write a mapping (key: value lines) here"
    if kind in ("list_type", "tuple_type"):
        return "write a list here"
    if kind in ("string_type", "str_type"):
        return "write a string here"
    return "see the field's description in amdfleet/config.py"
