"""Node layout: ranks and roles, where each node is reached, its environment, its engine
command line, and what preflight demands of it."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import NamedTuple

from amdfleet.addresses import host_port
from amdfleet.config import HostSpec, StackSpec
from amdfleet.engines.base import API_KEY_CONFIG, HEAD_PLACEHOLDER, Launch
from amdfleet.engines.flags import Flags, flatten, merge_flags, parse_flags
from amdfleet.plan.checkpoint import Resolved
from amdfleet.plan.models import (
    GIB,
    AddressSlot,
    ClusterPlan,
    ModelPlan,
    NodePlan,
    ParallelismPlan,
    ReadinessPlan,
    ServingPlan,
)
from amdfleet.plan.serving import engine_env, remote_dir
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.target import HostTarget

GPU_MIN_SHM_BYTES = 1 * GIB
LOCAL_ADDRESS = "127.0.0.1"
_BASE_STARTUP_S = 300
_LOAD_GIB_PER_S = 1.0


def parallelism_plan(resolved: Resolved) -> ParallelismPlan:
    """The stack's parallelism as planned."""
    par = resolved.spec.parallelism
    return ParallelismPlan(
        tp=par.tp,
        pp=par.pp,
        dp=par.dp,
        backend=par.backend,
        master_port=par.master_port,
        ray_port=par.ray_port,
        lm_head_every_stage=resolved.engine.lm_head_every_stage,
    )


def nodes(
    resolved: Resolved, model: ModelPlan, serving: ServingPlan, parallelism: ParallelismPlan
) -> tuple[NodePlan, ...]:
    """One :class:`NodePlan` per fleet host, rank 0 (the head) first."""
    spec, engine = resolved.spec, resolved.engine
    slots = _host_slots(spec)
    head = slots[0].cluster_address
    env = engine_env(resolved)
    requirement = host_requirement(resolved, model, serving)
    out = []
    for rank, slot in enumerate(slots):
        node_env = {
            **env,
            **_network_env(resolved, slot.host, slot.cluster_address),
            **_cpu_bind_env(resolved, parallelism, rank),
        }
        launch = _launch(model, serving, parallelism, len(slots), rank, head or HEAD_PLACEHOLDER)
        # Only the API key: the engine serves offline (HF_HUB_OFFLINE=1) from staged
        # weights, so the Hugging Face token goes to the ModelWeights download alone.
        secret_env = engine.secret_env(serving.api_key_secret)
        key_file = _api_key_file(resolved, launch)
        stages, tp_ranks = placement(len(slots), spec.topology.gpus_per_node, parallelism, rank)
        out.append(
            NodePlan(
                rank=rank,
                name=slot.name,
                target=HostTarget.from_spec(slot.host) if slot.host else None,
                address=slot.address,
                cluster_address=slot.cluster_address,
                role="head" if rank == 0 else "worker",
                serves_api=rank == 0,
                gpus=spec.topology.gpus_per_node,
                env=dict(sorted(node_env.items())),
                secret_env=secret_env,
                argv=_argv(resolved, model, launch, key_file),
                ray_argv=_beside_engine(engine.ray_argv(launch, slot.cluster_address), spec),
                remote_dir=remote_dir(spec),
                requirement=requirement,
                api_key_file=key_file,
                network_interface=slot.host.network_interface if slot.host else None,
                rdma_devices=slot.host.rdma_devices if slot.host else (),
                pipeline_stages=stages,
                tp_ranks=tp_ranks,
            )
        )
    return tuple(out)


def address_slots(spec: StackSpec) -> tuple[AddressSlot, ...]:
    """The addresses bound at deploy time (:mod:`amdfleet.plan.binding`): each node's
    cluster address on a cloud fleet of several nodes; none on one node (nothing else
    reaches it) or on a fleet of hosts (the stack names them)."""
    cloud = spec.fleet.cloud
    if cloud is None or cloud.count == 1:
        return ()
    return tuple(AddressSlot(node=_cloud_node(spec, i)) for i in range(cloud.count))


def placement(
    nodes: int, gpus_per_node: int, parallelism: ParallelismPlan, rank: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The pipeline stages and tensor-parallel ranks node ``rank`` runs (both empty on
    one node). Global ranks are stage-major (stage × tp + tp rank) and node r runs
    ranks r × gpus_per_node up to the next node's: vLLM's order, and what SGLang's
    ``_calculate_rank_ranges`` gives for every layout it accepts. So tp is the size of
    one stage's group over all nodes: tp=16 on two 8-GPU nodes is tp ranks 0-7 on
    rank 0 and 8-15 on rank 1."""
    if nodes == 1:
        return (), ()
    tp = parallelism.tp
    ranks = range(rank * gpus_per_node, (rank + 1) * gpus_per_node)
    return tuple(sorted({r // tp for r in ranks})), tuple(sorted({r % tp for r in ranks}))


def cluster_plan(
    resolved: Resolved, parallelism: ParallelismPlan, nodes: tuple[NodePlan, ...]
) -> ClusterPlan | None:
    """Where a multi-node stack's nodes meet (None on one node)."""
    if len(nodes) == 1:
        return None
    engine = resolved.engine
    head = nodes[0]
    return ClusterPlan(
        head_name=head.name,
        head_address=head.cluster_address or HEAD_PLACEHOLDER,
        api_port=resolved.spec.serving.port,
        head_ports=engine.head_ports(
            parallelism.backend, parallelism.master_port, parallelism.ray_port
        ),
        worker_http_paths=engine.worker_http_paths,
    )


def host_requirement(resolved: Resolved, model: ModelPlan, serving: ServingPlan) -> HostRequirement:
    """What preflight demands of every node."""
    spec, acc = resolved.spec, resolved.accelerator
    gpu = acc.arch != "cpu"
    local_path = spec.weights.local_path
    return HostRequirement(
        accelerator=acc.id,
        gpu_count=spec.topology.gpus_per_node if gpu else 0,
        runtime=spec.engine.runtime,
        min_shm_bytes=GPU_MIN_SHM_BYTES if gpu and spec.engine.ipc == "host" else 0,
        weights_dir=local_path or spec.weights.cache_dir,
        weights_bytes=0 if local_path else model.checkpoint_bytes,
        numa_balancing_off=gpu,
        cpu_dtype=None if gpu else serving.dtype,
    )


def readiness(resolved: Resolved, model: ModelPlan) -> ReadinessPlan:
    """How the head is known to serve, probed on the head host itself."""
    spec = resolved.spec
    host = {"0.0.0.0": LOCAL_ADDRESS, "::": "::1", "": LOCAL_ADDRESS}.get(
        spec.serving.host, spec.serving.host
    )
    return ReadinessPlan(
        base_url=f"http://{host_port(host, spec.serving.port)}",
        paths=resolved.engine.ready_paths,
        served_name=model.served_name,
        timeout_s=_startup_timeout(spec, model),
    )


def engine_executable(resolved: Resolved) -> str:
    """The engine's program: the stack's ``engine.executable`` for a process runtime that
    names one, else the engine's own command (``vllm``, ``python3``, ...) on PATH."""
    spec = resolved.spec
    if spec.engine.runtime == "process" and spec.engine.executable:
        return spec.engine.executable
    return resolved.engine.command[0]


def engine_python(resolved: Resolved) -> str:
    """The Python beside the engine executable (``/venv/bin/vllm`` → ``/venv/bin/python3``),
    or ``python3`` on PATH."""
    return engine_tool(engine_executable(resolved), "python3")


def engine_tool(executable: str, name: str) -> str:
    """The program ``name`` beside the engine ``executable`` (``/venv/bin/vllm`` →
    ``/venv/bin/<name>``), or ``name`` on PATH when the engine is found on PATH."""
    if "/" in executable:
        return str(PurePosixPath(executable).parent / name)
    return name


class _Slot(NamedTuple):
    name: str
    address: str | None
    cluster_address: str | None
    host: HostSpec | None


def _host_slots(spec: StackSpec) -> list[_Slot]:
    if spec.fleet.cloud is not None:
        # Placeholders where the cluster addresses go until the instances exist.
        placeholders = {slot.node: slot.placeholder for slot in address_slots(spec)}
        names = [_cloud_node(spec, i) for i in range(spec.fleet.cloud.count)]
        return [_Slot(name, None, placeholders.get(name), None) for name in names]
    slots = []
    for host in spec.fleet.hosts:
        if host.connection == "local":
            slots.append(_Slot(host.name, LOCAL_ADDRESS, LOCAL_ADDRESS, host))
        else:
            slots.append(_Slot(host.name, host.address, host.cluster_address, host))
    return slots


def _cloud_node(spec: StackSpec, index: int) -> str:
    """The name of a cloud fleet's node ``index`` (and of its instance)."""
    return f"{spec.name}-{index}"


def _network_env(resolved: Resolved, host: HostSpec | None, address: str | None) -> dict[str, str]:
    if resolved.spec.topology.nodes == 1:
        return {}
    env: dict[str, str] = {}
    if address:
        env.update(resolved.engine.node_env(address))
    if host is not None and host.rdma_devices:
        env["NCCL_IB_HCA"] = ",".join(host.rdma_devices)
    return env


def _cpu_bind_env(resolved: Resolved, parallelism: ParallelismPlan, rank: int) -> dict[str, str]:
    """CPU stacks with more than one rank: each rank pinned to a core of its own, numbered
    by global rank (node 0's ranks on cores 0.., node 1's next), so ranks sharing one
    machine (one host, or the lab's network namespaces) never share a core. GPU stacks
    leave thread placement to the engine."""
    world = parallelism.tp * parallelism.pp * parallelism.dp
    if resolved.accelerator.arch != "cpu" or world == 1:
        return {}
    per_node = max(world // resolved.spec.topology.nodes, 1)
    cpus = tuple(str(rank * per_node + i) for i in range(per_node))
    return resolved.engine.cpu_bind_env(cpus)


def _launch(
    model: ModelPlan,
    serving: ServingPlan,
    parallelism: ParallelismPlan,
    nodes: int,
    rank: int,
    head_address: str,
) -> Launch:
    """The engine's input record for one node, from the plan's records."""
    return Launch(
        checkpoint=model.checkpoint,
        served_name=model.served_name,
        revision=model.revision,
        is_local_path=model.is_local_path,
        online_quantization=model.online_quantization,
        host=serving.host,
        port=serving.port,
        max_model_len=serving.max_model_len,
        max_num_seqs=serving.max_num_seqs,
        max_num_batched_tokens=serving.max_num_batched_tokens,
        gpu_memory_utilization=serving.gpu_memory_utilization,
        kv_cache_dtype=serving.kv_cache_dtype,
        dtype=serving.dtype,
        admit_requests=serving.admit_requests,
        tp=parallelism.tp,
        pp=parallelism.pp,
        dp=parallelism.dp,
        backend=parallelism.backend,
        master_port=parallelism.master_port,
        ray_port=parallelism.ray_port,
        nodes=nodes,
        rank=rank,
        head_address=head_address,
        api_key=bool(serving.api_key_secret),
    )


def _api_key_file(resolved: Resolved, launch: Launch) -> str | None:
    """The file the launch script writes the API key into, for an engine that reads its
    key from a config file (SGLang's ``--config``); None otherwise."""
    if not (launch.api_key and resolved.engine.api_key_config):
        return None
    return f"{remote_dir(resolved.spec)}/{API_KEY_CONFIG}"


def _argv(
    resolved: Resolved, model: ModelPlan, launch: Launch, key_file: str | None
) -> tuple[str, ...]:
    spec, engine = resolved.spec, resolved.engine
    recipe_flags: Flags = []
    for recipe in resolved.recipes:
        recipe_flags.extend(recipe.args)
    merged = merge_flags(engine.flags(launch), recipe_flags, parse_flags(spec.engine.extra_args))
    if key_file and engine.api_key_config:
        merged.append((engine.api_key_config, key_file))
    command = (engine_executable(resolved), *engine.command[1:])
    return (*command, *engine.positional(model.checkpoint), *flatten(merged))


def _beside_engine(ray_argv: tuple[str, ...], spec: StackSpec) -> tuple[str, ...]:
    """``ray`` from the engine's own environment: a process-runtime engine named by path
    has Ray installed beside it (same venv), not on the host's PATH."""
    if not ray_argv or spec.engine.runtime != "process" or not spec.engine.executable:
        return ray_argv
    return (engine_tool(spec.engine.executable, ray_argv[0]), *ray_argv[1:])


def _startup_timeout(spec: StackSpec, model: ModelPlan) -> int:
    if spec.engine.startup_timeout_s:
        return spec.engine.startup_timeout_s
    per_node_gib = model.checkpoint_bytes / spec.topology.nodes / GIB
    return int(_BASE_STARTUP_S + per_node_gib / _LOAD_GIB_PER_S)
