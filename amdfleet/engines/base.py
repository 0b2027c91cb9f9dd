"""The engine interface: what the planner asks of every serving engine.

An :class:`Engine` knows its own command line (flags for the endpoint, parallelism,
checkpoint, memory and multi-node rendezvous), the environment it needs, how it takes
the API key, which HTTP paths say it is ready, and which layouts it can run. The planner
calls these with its own typed input record (:class:`Launch`, filled from the plan's
model, serving and parallelism records); an engine reads neither the stack spec nor the
plan, and this package imports neither. Adding an engine is one module in
:mod:`amdfleet.engines` and its line in ``REGISTRY``, plus its catalog entry in
:mod:`amdfleet.catalog.engines` (images and recipes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from amdfleet.engines.flags import Flags
from amdfleet.findings import Finding
from amdfleet.remote.engine import API_KEY_VAR

HEAD_PLACEHOLDER = "<head-address>"
KEY_SHIM_DIR = "bin"
"""The directory, in the engine's directory, holding an engine's key shim (see
:attr:`Engine.key_shim`)."""
NEXT_COMMAND = "--amdfleet-next-command"
"""Separates the command lines one parse-only check hands to an engine's parser."""
SPLIT_COMMANDS = f"""\
import sys
commands = [[]]
for word in sys.argv[1:]:
    if word == "{NEXT_COMMAND}":
        commands.append([])
    else:
        commands[-1].append(word)
"""
"""The start of every engine's parse script: ``commands``, the argv of each command."""
API_KEY_CONFIG = "engine-secrets.yaml"
"""The file, next to the launch script, an ``api_key_config`` engine reads its key from."""


@dataclass(frozen=True)
class Launch:
    """What one node's engine command line is built from: the fields of the plan's model,
    serving and parallelism records an engine reads, and the node's place."""

    # the model (plan.models.ModelPlan)
    checkpoint: str
    served_name: str
    revision: str | None
    is_local_path: bool
    online_quantization: bool
    # serving (plan.models.ServingPlan)
    host: str
    port: int
    max_model_len: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    gpu_memory_utilization: float | None
    kv_cache_dtype: str
    dtype: str | None
    admit_requests: int
    # parallelism (plan.models.ParallelismPlan)
    tp: int
    pp: int
    dp: int
    backend: str
    master_port: int
    ray_port: int
    # the node
    nodes: int
    rank: int
    head_address: str
    api_key: bool


class Engine(ABC):
    """A serving engine. Stateless; one instance per engine name."""

    name: ClassVar[str]
    command: ClassVar[tuple[str, ...]]
    ready_paths: ClassVar[tuple[str, ...]]
    """HTTP paths that answer 200 once the engine serves (the first is its health path)."""
    parallelism: ClassVar[tuple[str, ...]]
    """Parallelism kinds the engine runs: some of ``tp``, ``pp``, ``dp``."""
    multi_node: ClassVar[bool]
    backends: ClassVar[tuple[str, ...]] = ("mp",)
    """Multi-node executor backends (``mp``, ``ray``)."""
    cpu: ClassVar[bool] = False
    """Whether the engine has a CPU backend (the ``local`` stack)."""
    builds_image: ClassVar[bool] = False
    """Whether amdfleet can build the engine's image from source (AITER + vLLM)."""
    distribution: ClassVar[str | None] = None
    """The Python distribution whose installed version is the engine's version (what the
    cluster preflight compares across nodes on the process runtime); None: not Python."""
    api_key_env: ClassVar[str | None] = None
    """The variable the engine reads its API key from; None: see ``api_key_config``."""
    tokens_counter: ClassVar[str | None] = None
    """The Prometheus counter of generated tokens the engine serves at ``/metrics`` on its
    API port without the API key: the completion watchdog reads it to tell a busy head from
    a hung one. None: the engine serves none there as amdfleet runs it."""
    api_key_config: ClassVar[str | None] = None
    """For an engine that reads no key variable: the flag naming a YAML config file it
    reads its options from. The launch script writes the key into that file
    (:data:`API_KEY_CONFIG` in the engine's directory, mode 0600) at run time, so the key
    is in no command line."""

    def check_commands(
        self, argvs: Sequence[tuple[str, ...]], python: str
    ) -> list[tuple[str, ...]]:
        """Commands that hand each of ``argvs`` (this engine's rendered command lines) to
        the engine's own parser, without loading a model or touching a GPU: each exits 0
        when the engine accepts every flag and value, else non-zero with the engine's own
        message. ``python`` is the Python the engine runs under. One interpreter parses
        them all (:data:`NEXT_COMMAND` between them): importing an engine takes seconds.
        Empty for an engine with no parse-only check."""
        if not self.parse_script:
            return []
        words: list[str] = []
        for index, argv in enumerate(argvs):
            words += [NEXT_COMMAND] if index else []
            words += self.parser_words(argv)
        return [(python, "-c", self.parse_script, *words)]

    def parser_words(self, argv: tuple[str, ...]) -> list[str]:
        """What the engine's parser is given of a rendered command line."""
        return list(argv[len(self.command) :])

    parse_script: ClassVar[str] = ""
    """Python that parses ``sys.argv[1:]`` (commands split at :data:`NEXT_COMMAND`) with
    the engine's own parser (see :meth:`check_commands`)."""

    key_shim: ClassVar[str | None] = None
    """For an engine whose launcher hands the API key to a child program on that child's
    command line (and logs it): the child's name. The launcher then gets no key; a shim
    of that name first on PATH (:data:`KEY_SHIM_DIR`) execs the real child with the key
    in its environment as :attr:`key_shim_env`."""
    key_shim_env: ClassVar[str] = "API_KEY"

    @abstractmethod
    def flags(self, launch: Launch) -> Flags:
        """The generated flags for one node (recipes and extra args merge over them)."""

    def positional(self, checkpoint: str) -> tuple[str, ...]:
        """Positional words between the command and the flags."""
        return ()

    def process_env(self, remote_dir: str) -> dict[str, str]:
        """Extra environment when the engine runs as a host process in ``remote_dir``."""
        return {}

    def node_env(self, cluster_address: str) -> dict[str, str]:
        """Extra environment on a node of a multi-node engine, given its own address."""
        return {}

    def cpu_bind_env(self, cpus: tuple[str, ...]) -> dict[str, str]:
        """On a CPU stack, the environment that pins each of this node's ranks to its CPU
        list (``cpus[i]`` for the node's i-th rank); empty for an engine without CPU
        support."""
        return {}

    def ray_argv(self, launch: Launch, own_address: str | None) -> tuple[str, ...]:
        """The ``ray start`` line for this node (empty unless the backend is Ray)."""
        return ()

    # --- multi-node layout facts (issue 10: planner facts for clusters) ---------------

    worker_http_paths: ClassVar[tuple[str, ...]] = ()
    """Paths a worker (rank >= 1) answers on the API port; empty: workers serve no HTTP."""
    lm_head_every_stage: ClassVar[bool] = False
    """Whether every pipeline stage holds the LM head (not only the last one): the
    memory budget then counts it on each stage."""

    def head_ports(self, backend: str, master_port: int, ray_port: int) -> dict[str, int]:
        """What the other nodes connect to on the head, by purpose (multi-node only)."""
        if backend == "ray":
            return {"Ray GCS (ray_port)": ray_port}
        return {"rendezvous (master_port)": master_port}

    def layout_issues(self, nodes: int, pp: int) -> list[Finding]:
        """Pipeline layouts over ``nodes`` nodes the engine cannot place (none here)."""
        return []

    def secret_env(self, api_key_secret: str | None) -> dict[str, str]:
        """Environment variable → secret name for the API key.

        ``AMDFLEET_API_KEY`` is always set (launch scripts and probes use it); an engine
        that reads its own variable also gets that one.
        """
        if not api_key_secret:
            return {}
        secrets = {API_KEY_VAR: api_key_secret}
        if self.api_key_env:
            secrets[self.api_key_env] = api_key_secret
        return secrets


@dataclass(frozen=True)
class FlagNames:
    """How an OpenAI-style engine spells the serving options vLLM and SGLang share."""

    tp: str
    pp: str
    dp: str
    max_len: str
    max_seqs: str
    batched_tokens: str | None
    memory: str
    kv_fp8: tuple[str, str]


def serving_flags(launch: Launch, names: FlagNames) -> Flags:
    """Endpoint, parallelism, checkpoint and memory flags, spelled with ``names``."""
    flags: Flags = [
        ("--host", launch.host),
        ("--port", str(launch.port)),
        ("--served-model-name", launch.served_name),
        (names.tp, str(launch.tp)),
    ]
    if launch.pp > 1:
        flags.append((names.pp, str(launch.pp)))
    if launch.dp > 1:
        flags.append((names.dp, str(launch.dp)))
    if launch.revision and not launch.is_local_path:
        flags.append(("--revision", launch.revision))
    if launch.online_quantization:
        flags.append(("--quantization", "fp8"))
    flags.append((names.max_len, str(launch.max_model_len)))
    if launch.max_num_seqs:
        flags.append((names.max_seqs, str(launch.max_num_seqs)))
    if launch.max_num_batched_tokens and names.batched_tokens:
        flags.append((names.batched_tokens, str(launch.max_num_batched_tokens)))
    if launch.gpu_memory_utilization is not None:
        flags.append((names.memory, f"{launch.gpu_memory_utilization:g}"))
    if launch.kv_cache_dtype == "fp8":
        flags.append(names.kv_fp8)
    if launch.dtype:
        flags.append(("--dtype", launch.dtype))
    return flags
