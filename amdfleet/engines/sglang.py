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

Multi-node, as SGLang documents it ("Multi-Node Deployment", Llama 3.1 405B on two nodes,
https://docs.sglang.io/references/multi_node_deployment/multi_node.html; flags in
"Server Arguments", section "Multi-node distributed serving"): every node runs the same
command with ``--nnodes N --node-rank R --dist-init-addr HEAD:PORT``, and ``--tp`` /
``--pp-size`` are the sizes over ALL nodes (the 405B example is ``--tp 16`` on two
8-GPU nodes), as amdfleet's ``parallelism`` is. ``--tp`` is the spelling of SGLang's
docs and cookbook (argparse's unique prefix of ``--tp-size``); ``--pp-size`` is the
option's own name. ``HEAD:PORT`` is the head's cluster address and
``parallelism.master_port``: torch.distributed's TCP store listens there, and SGLang
derives its ZMQ ports from it (``PortArgs.init_new``: PORT+1 and up, on the head). Node
R runs the (pp, tp) ranks of ``_calculate_rank_ranges`` in SGLang's engine: it fills a
node with whole pipeline stages when nodes divide pp, and spreads each stage's TP group
over nodes/pp nodes when pp divides nodes; any other pp leaves stages unlaunched, so the
planner refuses it (:meth:`Sglang.layout_issues`). Only rank 0 serves the OpenAI API;
ranks >= 1 start no tokenizer and answer only ``/health`` and ``/health_generate`` on
``--host:--port`` (``launch_dummy_health_check_server``). Llama splits its layers across
stages with the embeddings on the first stage and an LM head built on every stage
(``LlamaForCausalLM`` creates ``ParallelLMHead`` whatever the pp rank).
"""

from __future__ import annotations

from typing import ClassVar

from amdfleet.addresses import host_port
from amdfleet.engines.base import SPLIT_COMMANDS, Engine, FlagNames, Launch, serving_flags
from amdfleet.engines.flags import Flags
from amdfleet.findings import Finding, config_issue

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


_PARSE = f"""{SPLIT_COMMANDS}\
import argparse
from sglang.srt.server_args import ServerArgs
for number, words in enumerate(commands, 1):
    print(f"amdfleet: sglang parses command {{number}} of {{len(commands)}}", flush=True)
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    parser.parse_args(words)
print("amdfleet: sglang accepts every command")
"""
# The parser prepare_server_args builds (sglang/srt/server_args.py), without constructing
# ServerArgs, whose checks look at the GPUs.


class Sglang(Engine):
    """SGLang."""

    name: ClassVar[str] = "sglang"
    command: ClassVar[tuple[str, ...]] = ("python3", "-m", "sglang.launch_server")
    ready_paths: ClassVar[tuple[str, ...]] = ("/health", "/v1/models")
    parallelism: ClassVar[tuple[str, ...]] = ("tp", "pp", "dp")
    multi_node: ClassVar[bool] = True
    distribution: ClassVar[str | None] = "sglang"
    api_key_config: ClassVar[str | None] = "--config"
    worker_http_paths: ClassVar[tuple[str, ...]] = ("/health", "/health_generate")
    lm_head_every_stage: ClassVar[bool] = True
    parse_script: ClassVar[str] = _PARSE

    def parser_words(self, argv: tuple[str, ...]) -> list[str]:
        """The flags without ``--config`` (the key file the launch script writes only
        when the engine starts)."""
        words = list(argv[len(self.command) :])
        if self.api_key_config in words:
            at = words.index(self.api_key_config)
            del words[at : at + 2]
        return words

    def flags(self, launch: Launch) -> Flags:
        """The model path, serving flags and the rendezvous (the key: ``api_key_config``)."""
        flags: Flags = [("--model-path", launch.checkpoint)]
        flags += serving_flags(launch, _NAMES)
        if launch.nodes > 1:
            flags += [
                ("--nnodes", str(launch.nodes)),
                ("--node-rank", str(launch.rank)),
                (
                    "--dist-init-addr",
                    host_port(launch.head_address, launch.master_port),
                ),
            ]
        return flags

    def head_ports(self, backend: str, master_port: int, ray_port: int) -> dict[str, int]:
        """``--dist-init-addr``'s port: torch.distributed's store, and the base of the
        ZMQ ports SGLang derives above it on the head."""
        return {"dist-init (master_port, and ports above it)": master_port}

    def layout_issues(self, nodes: int, pp: int) -> list[Finding]:
        """SGLang places pipeline stages on nodes only when one of pp and nodes divides
        the other (see the module docstring)."""
        if nodes == 1 or pp % nodes == 0 or nodes % pp == 0:
            return []
        divisors = ", ".join(str(d) for d in range(1, nodes + 1) if nodes % d == 0)
        return [
            config_issue(
                "parallelism.pp",
                f"sglang cannot place pp={pp} pipeline stages on {nodes} nodes: a node runs "
                "whole stages (pp a multiple of topology.nodes) or a share of one stage "
                f"(pp dividing topology.nodes), so with pp={pp} some stages never start",
                f"use a pp that divides {nodes} ({divisors}) or is a multiple of it "
                f"({nodes}, {2 * nodes}, ...), with tp × pp = topology.nodes × gpus_per_node",
            )
        ]


ENGINE = Sglang()
