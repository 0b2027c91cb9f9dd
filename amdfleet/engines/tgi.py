"""Text Generation Inference: ``text-generation-launcher``, tensor parallel on one node.

Seed 001 (dstack's 405B comparison) runs it on 8x MI300X. Its router reads the API key
from ``API_KEY``, handed to it by amdfleet's router shim (see ``Tgi.key_shim``), and it
answers readiness on ``/health`` and ``/info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from amdfleet.engines.base import Engine, Launch
from amdfleet.engines.flags import Flags


class Tgi(Engine):
    """TGI."""

    name: ClassVar[str] = "tgi"
    command: ClassVar[tuple[str, ...]] = ("text-generation-launcher",)
    ready_paths: ClassVar[tuple[str, ...]] = ("/health", "/info")
    parallelism: ClassVar[tuple[str, ...]] = ("tp",)
    multi_node: ClassVar[bool] = False
    # TGI 3.3.6's launcher logs its arguments, key included (`tracing::info!("{:#?}",
    # args)`, launcher/src/main.rs:2075), and starts its router with `--api-key KEY` on the
    # command line (main.rs:1942-1946), found on PATH (`Command::new("text-generation-
    # router")`, main.rs:1971) with the launcher's environment; the router also reads
    # API_KEY itself (backends/v3/src/main.rs:53-54). So the launcher gets no key, and a
    # shim named like the router hands it the key as API_KEY (commit efb94e0d3db6).
    api_key_env: ClassVar[str | None] = None
    key_shim: ClassVar[str | None] = "text-generation-router"

    def check_commands(
        self, argvs: Sequence[tuple[str, ...]], python: str
    ) -> list[tuple[str, ...]]:
        """The launcher's own clap parser, once per command: ``--help`` last, so every
        flag and value before it is parsed first (an unknown one exits 2, "error:
        unexpected argument '--x' found"); all accepted, it prints its help and exits 0.
        Starts no shard. Flags only: the launcher also reads variables (``PORT`` in the
        ROCm image) that this does not check."""
        return [(*argv, "--help") for argv in argvs]

    def flags(self, launch: Launch) -> Flags:
        """Model, endpoint, shards and token limits (TGI counts the prompt in the total)."""
        flags: Flags = [
            ("--model-id", launch.checkpoint),
            ("--hostname", launch.host),
            ("--port", str(launch.port)),
            ("--num-shard", str(launch.tp)),
            ("--max-total-tokens", str(launch.max_model_len)),
            ("--max-input-tokens", str(launch.max_model_len - 1)),
        ]
        if launch.revision and not launch.is_local_path:
            flags.append(("--revision", launch.revision))
        if launch.online_quantization:
            flags.append(("--quantize", "fp8"))
        if launch.dtype:
            flags.append(("--dtype", launch.dtype))
        # TGI refuses (429 "Model is overloaded"), not queues, past this many requests in
        # flight (128 by default): admit at least what the stack's verification sends.
        concurrent = max(launch.max_num_seqs or 0, launch.admit_requests)
        if concurrent:
            flags.append(("--max-concurrent-requests", str(concurrent)))
        return flags


ENGINE = Tgi()
