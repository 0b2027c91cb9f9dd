"""SGLang: ``python3 -m sglang.launch_server``, OpenAI API, multi-node by ``--nnodes``.

Seed 003 (SGLang's Llama 3.1 cookbook) launches it this way. SGLang reads no API-key
variable, and ``--api-key KEY`` would show the key in ``ps`` and ``docker inspect``. It
does read options from a YAML file (``--config FILE``, merged under the command line in
``prepare_server_args``, SGLang >= 0.4.10): the launch script writes ``api-key: KEY``
into ``engine-secrets.yaml`` (mode 0600, in the 0700 engine directory, mounted read-only
into the container) from ``AMDFLEET_API_KEY`` at run time, and the command line names
only that file. What remains exposed: SGLang logs its whole configuration
(``server_args=ServerArgs(..., api_key='KEY', ...)``) at start-up, into the engine log
(mode 0600) or ``docker logs``, readable by root on the host; amdfleet masks the key in
every log line it reads back.
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
    distribution: ClassVar[str | None] = "sglang"
    api_key_config: ClassVar[str | None] = "--config"

    def flags(self, launch: Launch) -> Flags:
        """The model path, serving flags and the rendezvous (the key: ``api_key_config``)."""
        flags: Flags = [("--model-path", launch.model.checkpoint)]
        flags += serving_flags(launch, _NAMES)
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
