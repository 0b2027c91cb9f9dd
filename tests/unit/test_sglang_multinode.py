"""SGLang across nodes: the rendered command of each rank against SGLang's documented
flags, where each node's GPUs sit in the layout, and the layouts SGLang cannot place.

Sources (read for these facts; no SGLang runs here, there is no GPU):
- "Multi-Node Deployment", Llama 3.1 405B "Run 405B (fp16) on Two Nodes",
  https://docs.sglang.io/references/multi_node_deployment/multi_node.html: both nodes run
  ``python3 -m sglang.launch_server --model-path ... --tp 16 --dist-init-addr
  HEAD_IP:PORT --nnodes 2 --node-rank {0,1}``, the SAME head address on both;
- "Server Arguments" (docs/advanced_features/server_arguments.md), section "Multi-node
  distributed serving": ``--dist-init-addr`` "the host address for initializing
  distributed backend (e.g. 192.168.0.2:25000)", ``--nnodes``, ``--node-rank``; and
  ``--pp-size`` (alias ``--pipeline-parallel-size``), the pipeline-parallel size;
- sgl-project/sglang ``python/sglang/srt/entrypoints/engine.py``,
  ``_calculate_rank_ranges``: which (pp, tp) ranks node R launches (replayed below);
  and ``node_rank >= 1`` ranks start no tokenizer, only ``launch_dummy_health_check_server``
  (``/health``, ``/health_generate`` on ``--host:--port``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amdfleet.config import load_stack_file, parse_stack
from amdfleet.errors import PlanError
from amdfleet.plan import DeploymentPlan, ParallelismPlan, plan
from amdfleet.plan.layout import placement
from amdfleet.render import render_plan
from tests.support.fleets import placeholder_hosts
from tests.unit.rendered import container_command, exec_argv, flag_value, node_file

STACKS = Path(__file__).parent / "stacks"


def _deploy(name: str) -> DeploymentPlan:
    return plan(load_stack_file(str(STACKS / f"Pulumi.{name}.yaml")).spec)


def _argv(deployment: DeploymentPlan, rank: int) -> list[str]:
    """The engine argv the rendered launch script of node ``rank`` runs."""
    files = {f.path: f for f in render_plan(deployment)}
    argv = exec_argv(node_file(files, rank, "launch.sh"))  # docker run ... --entrypoint sh IMAGE
    image, command = container_command(argv)
    assert image == deployment.image.image
    return command


@pytest.mark.parametrize("rank", [0, 1])
def test_tp16_over_two_nodes_renders_the_documented_405b_command(rank: int) -> None:
    """Docs' 405B layout: --tp 16 (the size over ALL nodes) on both nodes, --nnodes 2,
    --node-rank 0 / 1, and the head's address in --dist-init-addr on both."""
    argv = _argv(_deploy("sglang-2node"), rank)
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    assert flag_value(argv, "--model-path") == "meta-llama/Llama-3.1-405B-Instruct"
    assert flag_value(argv, "--tp") == "16"
    assert "--pp-size" not in argv
    assert flag_value(argv, "--nnodes") == "2"
    assert flag_value(argv, "--node-rank") == str(rank)
    assert flag_value(argv, "--dist-init-addr") == "10.0.1.1:5000"  # rank 0's, on both
    # every rank binds --host/--port: rank 0 the API, ranks >= 1 SGLang's health server
    assert (flag_value(argv, "--host"), flag_value(argv, "--port")) == ("0.0.0.0", "8000")


@pytest.mark.parametrize("rank", [0, 1])
def test_pp2_tp8_over_two_nodes_gives_each_node_one_stage(rank: int) -> None:
    """--pp-size 2 --tp 8: SGLang runs stage R on node R, its 8 TP ranks on 8 local GPUs."""
    deployment = _deploy("sglang-2node-pp2")
    argv = _argv(deployment, rank)
    assert (flag_value(argv, "--tp"), flag_value(argv, "--pp-size")) == ("8", "2")
    assert flag_value(argv, "--nnodes") == "2"
    assert flag_value(argv, "--node-rank") == str(rank)
    assert flag_value(argv, "--dist-init-addr") == "10.0.2.1:5000"
    node = deployment.nodes[rank]
    assert (node.pipeline_stages, node.tp_ranks) == ((rank,), tuple(range(8)))


def test_only_the_head_serves_the_api_and_workers_answer_health_only() -> None:
    deployment = _deploy("sglang-2node")
    assert [n.serves_api for n in deployment.nodes] == [True, False]
    cluster = deployment.cluster
    assert cluster is not None
    assert (cluster.head_name, cluster.head_address, cluster.api_port) == ("a", "10.0.1.1", 8000)
    assert cluster.worker_http_paths == ("/health", "/health_generate")
    assert list(cluster.head_ports.values()) == [5000]
    assert next(iter(cluster.head_ports)).startswith("dist-init")


def _sglang_rank_ranges(nnodes: int, pp: int, tp: int, node: int) -> tuple[range, range]:
    """SGLang's ``_calculate_rank_ranges`` (engine.py), replayed: the pp and tp ranks
    node ``node`` launches."""
    pp_per_node = max(pp // nnodes, 1)
    nodes_per_pp_rank = max(nnodes // pp, 1)
    pp_ranks = range(
        pp_per_node * (node // nodes_per_pp_rank), pp_per_node * (node // nodes_per_pp_rank + 1)
    )
    tp_per_node = tp // nodes_per_pp_rank
    tp_ranks = range(
        tp_per_node * (node % nodes_per_pp_rank), tp_per_node * (node % nodes_per_pp_rank + 1)
    )
    return pp_ranks, tp_ranks


# (nodes, gpus per node, tp, pp): every layout SGLang accepts on up to 4 nodes of 8 GPUs
ACCEPTED = [
    (2, 8, 16, 1),
    (2, 8, 8, 2),
    (2, 8, 4, 4),
    (2, 8, 2, 8),
    (4, 8, 32, 1),
    (4, 8, 16, 2),
    (4, 8, 8, 4),
    (4, 8, 4, 8),
    (4, 4, 8, 2),
    (2, 4, 2, 4),
]


@pytest.mark.parametrize(("nodes", "gpus", "tp", "pp"), ACCEPTED)
def test_the_planned_placement_is_sglangs(nodes: int, gpus: int, tp: int, pp: int) -> None:
    """The stages and TP ranks the plan says each node runs are those SGLang launches
    there, and each node launches exactly gpus_per_node ranks."""
    par = ParallelismPlan(tp=tp, pp=pp, dp=1, backend="mp", master_port=5000, ray_port=6379)
    for node in range(nodes):
        stages, tp_ranks = placement(nodes, gpus, par, node)
        pp_ranks, sglang_tp = _sglang_rank_ranges(nodes, pp, tp, node)
        assert (stages, tp_ranks) == (tuple(pp_ranks), tuple(sglang_tp))
        assert len(pp_ranks) * len(sglang_tp) == gpus


def _stack(engine: str, nodes: int, gpus: int, tp: int, pp: int):  # type: ignore[no-untyped-def]
    return parse_stack(
        f"{engine}-{nodes}x{gpus}-tp{tp}-pp{pp}",
        {
            "fleet": {"hosts": placeholder_hosts(nodes)},
            "topology": {"accelerator": "mi300x", "nodes": nodes, "gpus_per_node": gpus},
            "model": {"id": "llama-3.1-8b-instruct", "precision": "fp8"},
            "engine": {"name": engine},
            "parallelism": {"tp": tp, "pp": pp},
            "serving": {"max_model_len": 8192},
            "verification": {"enabled": False},
        },
    )


@pytest.mark.parametrize(("nodes", "gpus", "tp", "pp"), [(2, 6, 4, 3), (4, 3, 4, 3)])
def test_sglang_refuses_a_pp_it_cannot_place(nodes: int, gpus: int, tp: int, pp: int) -> None:
    """With pp=3 on 2 or 4 nodes SGLang's rank ranges (replayed) do not launch the tp × pp
    ranks the layout has (a stage never starts, or one that does not exist is asked
    for): the planner refuses it naming the field, the value and the valid pp."""
    launched = {
        (p, t)
        for node in range(nodes)
        for ranges in [_sglang_rank_ranges(nodes, pp, tp, node)]
        for p in ranges[0]
        for t in ranges[1]
    }
    assert launched != {(p, t) for p in range(pp) for t in range(tp)}  # what it prevents
    with pytest.raises(PlanError) as caught:
        plan(_stack("sglang", nodes, gpus, tp, pp))
    issue = next(i for i in caught.value.issues if i.subject == "parallelism.pp")
    assert f"pp={pp}" in issue.detail and f"on {nodes} nodes" in issue.detail
    assert f"divides {nodes}" in issue.hint and "or is a multiple of it" in issue.hint


def test_vllm_places_the_same_layout_so_it_is_not_refused() -> None:
    """vLLM lays ranks out consecutively over nodes, so pp=3 on 2 × 6 GPUs runs there."""
    deployment = plan(_stack("vllm", 2, 6, 4, 3))
    assert [(n.pipeline_stages, n.tp_ranks) for n in deployment.nodes] == [
        ((0, 1), (0, 1, 2, 3)),
        ((1, 2), (0, 1, 2, 3)),
    ]
