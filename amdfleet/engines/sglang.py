"""SGLang: ``python3 -m sglang.launch_server``, OpenAI API, multi-node by ``--nnodes``.

Seed 003 (SGLang's Llama 3.1 cookbook) launches it this way. SGLang reads no API-key
variable: the key is passed as ``--api-key``, expanded from ``AMDFLEET_API_KEY`` by
the launch script at run time, so it never appears in a rendered file.
"""

from __future__ import annotations

from typing import ClassVar

from amdfleet.addresses import host_port
from amdfleet.engines.base import Engine, FlagNames, Launch, serving_flags
from amdfleet.engines.flags import Flags

_NAMES = FlagNames(
    tp="--tp",
    pp="--pp-size",
    dp="--dp",
    max_len="--context-length",
    max_seqs="--max-running-requests",
    batched_tokens=None,
    memory="--mem-fraction-static",
    kv_fp8=("--kv-cache-dtype", "fp8_e4m3"),
)


class Sglang(Engine):
    """SGLang."""

    name: ClassVar[str] = "sglang"
    command: ClassVar[tuple[str, ...]] = ("python3", "-m", "sglang.launch_server")
    ready_paths: ClassVar[tuple[str, ...]] = ("/health", "/v1/models")
    parallelism: ClassVar[tuple[str, ...]] = ("tp", "pp", "dp")
    multi_node: ClassVar[bool] = True

    def flags(self, launch: Launch) -> Flags:
        """The model path, serving flags, the key reference and the rendezvous."""
        flags: Flags = [("--model-path", launch.model.checkpoint)]
        flags += serving_flags(launch, _NAMES)
        if launch.api_key:
            flags.append(("--api-key", "${AMDFLEET_API_KEY}"))
        if launch.nodes > 1:
            flags += [
                ("--nnodes", str(launch.nodes)),
                ("--node-rank", str(launch.rank)),
                (
                    "--dist-init-addr",
                    host_port(launch.head_address, launch.parallelism.master_port),
                ),
            ]
        return flags


ENGINE = Sglang()
