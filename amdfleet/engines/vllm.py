"""vLLM: ``vllm serve``, OpenAI API, multi-node through its own ``mp`` rendezvous or Ray.

Seeds 000, 002 and 004 launch it this way; the recipe flags and environment per arch
and precision are catalog data (:data:`amdfleet.catalog.engines.RECIPES`).
"""

from __future__ import annotations

from typing import ClassVar

from amdfleet.addresses import host_port
from amdfleet.engines.base import SPLIT_COMMANDS, Engine, FlagNames, Launch, serving_flags
from amdfleet.engines.flags import Flags

_NAMES = FlagNames(
    tp="--tensor-parallel-size",
    pp="--pipeline-parallel-size",
    dp="--data-parallel-size",
    max_len="--max-model-len",
    max_seqs="--max-num-seqs",
    batched_tokens="--max-num-batched-tokens",
    memory="--gpu-memory-utilization",
    kv_fp8=("--kv-cache-dtype", "fp8"),
)


_PARSE = f"""{SPLIT_COMMANDS}\
from vllm.utils.argparse_utils import FlexibleArgumentParser
import vllm.entrypoints.cli.serve as serve
for number, words in enumerate(commands, 1):
    print(f"amdfleet: vllm parses command {{number}} of {{len(commands)}}", flush=True)
    parser = FlexibleArgumentParser(prog="vllm")
    command = serve.cmd_init()[0]
    command.subparser_init(parser.add_subparsers(required=False, dest="subparser"))
    command.validate(parser.parse_args(["serve", *words]))
print("amdfleet: vllm accepts every command")
"""
# What `vllm serve` does before it loads anything (vllm/entrypoints/cli/main.py: the
# serve subparser's parse_args, then ServeSubcommand.validate).


class Vllm(Engine):
    """vLLM."""

    name: ClassVar[str] = "vllm"
    command: ClassVar[tuple[str, ...]] = ("vllm", "serve")
    ready_paths: ClassVar[tuple[str, ...]] = ("/health", "/v1/models")
    parallelism: ClassVar[tuple[str, ...]] = ("tp", "pp", "dp")
    multi_node: ClassVar[bool] = True
    backends: ClassVar[tuple[str, ...]] = ("mp", "ray")
    cpu: ClassVar[bool] = True
    builds_image: ClassVar[bool] = True
    distribution: ClassVar[str | None] = "vllm"
    api_key_env: ClassVar[str | None] = "VLLM_API_KEY"
    # Measured on vLLM 0.32.0 (CPU) with VLLM_API_KEY set: /metrics answers 200 without
    # the key, and the counter's sum grows by each token served.
    tokens_counter: ClassVar[str | None] = "vllm:generation_tokens_total"
    parse_script: ClassVar[str] = _PARSE

    def flags(self, launch: Launch) -> Flags:
        """Serving flags, then the multi-node executor flags."""
        flags = serving_flags(launch, _NAMES)
        if launch.nodes > 1:
            flags += _multinode_flags(launch)
        return flags

    def positional(self, checkpoint: str) -> tuple[str, ...]:
        """``vllm serve <checkpoint>``."""
        return (checkpoint,)

    def process_env(self, remote_dir: str) -> dict[str, str]:
        """vLLM's IPC sockets go in the engine directory, which destroy removes, not in
        the host's /tmp (a container keeps them inside itself)."""
        return {"VLLM_RPC_BASE_PATH": remote_dir}

    def node_env(self, cluster_address: str) -> dict[str, str]:
        """The address this node's workers advertise to the others."""
        return {"VLLM_HOST_IP": cluster_address}

    def cpu_bind_env(self, cpus: tuple[str, ...]) -> dict[str, str]:
        """``VLLM_CPU_OMP_THREADS_BIND``: one CPU list per rank on this node, ``|``
        between ranks. Without it vLLM's automatic binding wants a NUMA node per rank and
        refuses ("Not enough allowed NUMA nodes to bind threads") on one-NUMA-node hosts."""
        return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(cpus)}

    def ray_argv(self, launch: Launch, own_address: str | None) -> tuple[str, ...]:
        """``ray start --head`` on rank 0, ``ray start --address head:port --block`` else."""
        if launch.nodes == 1 or launch.backend != "ray":
            return ()
        port = str(launch.ray_port)
        own = ("--node-ip-address", own_address) if own_address else ()
        if launch.rank == 0:
            return ("ray", "start", "--head", "--port", port, *own)
        head = host_port(launch.head_address, launch.ray_port)
        return ("ray", "start", "--address", head, *own, "--block")


def _multinode_flags(launch: Launch) -> Flags:
    if launch.backend == "ray":
        return [("--distributed-executor-backend", "ray")]
    flags: Flags = [
        ("--distributed-executor-backend", "mp"),
        ("--nnodes", str(launch.nodes)),
        ("--node-rank", str(launch.rank)),
        ("--master-addr", launch.head_address),
        ("--master-port", str(launch.master_port)),
    ]
    if launch.rank > 0:
        flags.append(("--headless", None))
    return flags


ENGINE = Vllm()
