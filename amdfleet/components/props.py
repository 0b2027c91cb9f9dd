"""The plan-to-props mapping: every provider's properties, from the deployment plan.

The components (:mod:`amdfleet.components`) only wire resources; what each resource is
given comes from here, one function per resource, from plan records and the hosts'
targets. The launch files are rendered once per node, from the plan and the image
reference the node runs (:func:`node_files`): at graph time when the plan's reference is
what runs, else once the build or the pin has produced the digest reference, or the
plan's addresses are bound (an Output).
A cloud node's host is an Output too (its instance's address and host key), and so is
the plan of a cloud fleet of several nodes, whose cluster addresses are bound once the
instances exist (:data:`PlanInput`): the components bind the props to them with
:func:`bound`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, TypeVar

import pulumi

from amdfleet import engines
from amdfleet.errors import PlanError
from amdfleet.findings import config_issue
from amdfleet.plan import DeploymentPlan, NodePlan
from amdfleet.plan.models import FabricPlan
from amdfleet.providers.cluster_check import ClusterCheckNode, ClusterCheckProps
from amdfleet.providers.command_check import EngineCommandCheckProps, ParseCheck
from amdfleet.providers.engine_cluster import EngineClusterNode, EngineClusterProps
from amdfleet.providers.engine_image import EngineImageProps
from amdfleet.providers.engine_node import EngineFile, ReadinessCheck
from amdfleet.providers.engine_service import EngineServiceArgs, EngineServiceProps
from amdfleet.providers.fabric_check import SCRIPT_NAME, FabricCheckProps, FabricRun
from amdfleet.providers.image_build import EngineImageBuildProps
from amdfleet.providers.image_pin import ImagePinProps
from amdfleet.providers.model_weights import ModelWeightsProps
from amdfleet.providers.ssh_host import SshHostProps
from amdfleet.providers.verification import VerificationProps
from amdfleet.remote import fabric
from amdfleet.remote.cluster import collective_env, engine_version_command
from amdfleet.remote.reachability import rendezvous_ports
from amdfleet.remote.transport.target import HostTarget
from amdfleet.render import RenderedFile, render_dockerfile, render_node

IMAGE_TIMEOUT_S = 3 * 3600

NodeFiles = dict[str, EngineFile] | pulumi.Output[dict[str, Any]]
"""A node's launch files: rendered at graph time, or (an image reference or addresses
known only during the update) an Output of their JSON form."""

TargetInput = HostTarget | pulumi.Output[HostTarget]
"""A node's host: known at graph time (a host of the stack), or once its cloud instance
exists (built from the instance's outputs)."""

PlanInput = DeploymentPlan | pulumi.Output[DeploymentPlan]
"""The plan as a fleet's nodes run it: the plan itself, or (a cloud fleet of several
nodes) an Output of it with the instances' addresses bound (:mod:`amdfleet.plan.binding`)."""

_T = TypeVar("_T")


def bound(build: Callable[..., _T], *args: Any) -> _T | pulumi.Output[_T]:
    """``build(*args)``: now when every argument is a plain value, else an Output of it,
    built once the arguments that are Outputs (a cloud node's host, its address) are
    known. The providers take either (``ProviderProps.inputs_of``)."""
    if not any(isinstance(arg, pulumi.Output) for arg in args):
        return build(*args)
    return pulumi.Output.all(*args).apply(lambda values: build(*values))


# ------------------------------------------------------------------ hosts and images


def ssh_host_props(node: NodePlan, target: HostTarget) -> SshHostProps:
    """The SshHost of ``node``: its host and what preflight demands of it."""
    return SshHostProps(host=target, requirement=node.requirement)


def image_build_props(plan: DeploymentPlan, target: HostTarget) -> EngineImageBuildProps:
    """The one build of the plan's image on ``target`` (the build host), pushed to the
    plan's registry."""
    image = plan.image
    return EngineImageBuildProps(
        host=target,
        image=str(image.image),
        dockerfile=render_dockerfile(plan).content,
        content_hash=str(image.content_hash),
        gfx_targets=image.gfx_targets,
        build_hours=image.build_hours,
        timeout_s=image.build_timeout_s,
        work_dir=image.build_work_dir,
        registry=str(image.registry),
        registry_username=image.registry_username,
    )


def image_pin_props(plan: DeploymentPlan, target: HostTarget) -> ImagePinProps:
    """The pin of the plan's pre-built image tag to a digest, resolved on ``target``."""
    return ImagePinProps(host=target, image=str(plan.image.image), timeout_s=IMAGE_TIMEOUT_S)


def engine_image_props(
    plan: DeploymentPlan, node: NodePlan, target: HostTarget, dockerfile: RenderedFile | None
) -> EngineImageProps:
    """The engine image staged on ``node``: pulled, or built there from ``dockerfile`` (a
    build without a registry; rendered once for every node by the caller)."""
    image = plan.image
    on_node = dockerfile is not None
    return EngineImageProps(
        host=target,
        image=image.image,
        dockerfile=dockerfile.content if dockerfile else None,
        dockerfile_hash=dockerfile.sha256 if dockerfile else None,
        build_dir=f"{node.remote_dir}-image",
        timeout_s=image.build_timeout_s if on_node else IMAGE_TIMEOUT_S,
        keep_on_delete=False,
        registry=image.registry,
        registry_username=image.registry_username,
        gfx_targets=image.gfx_targets,
        build_hours=image.build_hours,
    )


def model_weights_props(
    plan: DeploymentPlan, target: HostTarget, *, in_image: bool
) -> ModelWeightsProps:
    """The model's weights staged on ``target`` (``in_image``: downloaded with the engine
    image's Python, the docker runtime)."""
    weights = plan.weights
    return ModelWeightsProps(
        host=target,
        repo=weights.repo,
        revision=weights.revision,
        cache_dir=weights.cache_dir,
        local_path=weights.local_path,
        python=weights.python,
        docker_image=plan.image.image if in_image else None,
        hub_endpoint=weights.hub_endpoint,
        timeout_s=weights.timeout_s,
        keep_on_delete=weights.keep_on_delete,
    )


# ------------------------------------------------------------------------- checks


def command_check_props(plan: DeploymentPlan, head: HostTarget) -> EngineCommandCheckProps:
    """The deploy-time check of every node's command, run on the head: in the plan's image
    (the program passes the pinned digest in its place) or the engine's virtualenv."""
    engine = engines.engine(plan.engine.name)
    docker = plan.engine.runtime == "docker"
    python = "python3" if docker else plan.engine.python
    distinct: dict[tuple[str, ...], list[str]] = {}
    for node in plan.nodes:
        distinct.setdefault(node.argv, []).append(node.name)
    argvs = list(distinct)
    runs = engine.check_commands(argvs, python)
    if len(runs) == len(argvs):  # one run per command
        names = [tuple(distinct[argv]) for argv in argvs]
    else:  # one run for them all
        names = [tuple(n.name for n in plan.nodes)] * len(runs)
    return EngineCommandCheckProps(
        host=head,
        engine=f"{plan.engine.name} {plan.engine.version}",
        runtime=plan.engine.runtime,
        image=plan.image.image if docker else None,
        gpu=docker and not plan.accelerator.is_cpu,
        env=plan.head.env,
        checks=tuple(
            ParseCheck(nodes=nodes, argv=run) for nodes, run in zip(names, runs, strict=True)
        ),
    )


def cluster_check_props(plan: DeploymentPlan, targets: Sequence[HostTarget]) -> ClusterCheckProps:
    """ClusterCheck's props for ``plan`` (``targets`` in node order, as the Fleet holds
    them). The interface and RDMA devices checked are those the stack names for the
    node; the engine version is asked on the process runtime only (on docker the image
    digest says it)."""
    engine = engines.engine(plan.engine.name)
    command = None
    if plan.engine.runtime == "process" and engine.distribution:
        command = engine_version_command(plan.engine.python, engine.distribution)
    par = plan.parallelism
    return ClusterCheckProps(
        nodes=tuple(
            _cluster_node(plan, node, target)
            for node, target in zip(plan.nodes, targets, strict=True)
        ),
        ports=rendezvous_ports(par.backend, par.master_port, par.ray_port),
        engine_dir=plan.head.remote_dir,
        container=plan.engine.container_name if plan.engine.runtime == "docker" else None,
        engine_version_command=command,
    )


def fabric_check_props(
    plan: DeploymentPlan,
    targets: Sequence[HostTarget],
    interfaces: Mapping[str, str | None] | None = None,
    image: str | None = None,
) -> FabricCheckProps:
    """The FabricCheck of ``plan`` on the fleet's hosts (``targets``, one per node in rank
    order), each node's socket traffic on its interface in ``interfaces`` (node name →
    interface, as the cluster check derives them from the host facts), a test in the
    engine image run in ``image`` when given (the digest reference every node pulled).
    Raises ValueError when the plan has no fabric check (``plan.fabric`` is None)."""
    check = plan.fabric
    if check is None:
        raise ValueError(f"stack {plan.stack} does not enable the fabric check")
    if image is not None and check.image is not None:
        check = check.model_copy(update={"image": image})
    envs = {
        n.name: {**n.env, **collective_env(interfaces.get(n.name))} if interfaces else n.env
        for n in plan.nodes
    }
    pairs = list(zip(plan.nodes, targets, strict=True))
    if check.kind == "gloo":
        runs = [_gloo_run(plan, check, node, envs[node.name], target) for node, target in pairs]
        script = fabric.GLOO_SCRIPT.read_text()
    else:
        runs = [_rccl_run(check, pairs, envs[plan.head.name])]
        script = None
    return FabricCheckProps(
        kind=check.kind,
        runs=tuple(runs),
        script=script,
        work_dir=check.work_dir,
        container=check.container_name if check.image else None,
        gate_bytes=check.gate_bytes,
        min_busbw_gbps=check.min_busbw_gbps,
        timeout_s=check.timeout_s,
    )


def verification_props(
    plan: DeploymentPlan, tokenizer_host: HostTarget, base_url: str
) -> VerificationProps:
    """The verification of the endpoint at ``base_url`` (the plan's, or the one its cloud
    head is reached at; the tokenizer read from the weights staged on ``tokenizer_host``)."""
    return VerificationProps(
        base_url=base_url,
        model=plan.model.served_name,
        spec=plan.verification.input,
        tokenizer_host=tokenizer_host,
        report_dir=plan.verification.report_dir,
        parity_reference_sha256=_parity_sha256(plan),
    )


# ------------------------------------------------------------------------ engines


def node_files(plan: PlanInput, rank: int, ref: pulumi.Output[str] | None) -> NodeFiles:
    """Node ``rank``'s launch files, rendered once: at graph time from the plan running its
    own image (``ref`` None), else once ``ref`` (the digest reference every node pulls)
    and the plan (an Output when addresses are bound at deploy time) are known."""
    if ref is None and isinstance(plan, DeploymentPlan):
        return _engine_files(plan, plan.nodes[rank], plan.image.image)
    return bound(functools.partial(_rank_files, rank=rank), plan, ref)


def launch_files(plan: DeploymentPlan, node: NodePlan, ref: str | None) -> dict[str, Any]:
    """``node``'s rendered launch files (as the engine providers take them, JSON) running
    image ``ref``: the digest reference every node pulled (None: no image, the process
    runtime)."""
    return {name: f.model_dump(mode="json") for name, f in _engine_files(plan, node, ref).items()}


def engine_service_props(
    plan: DeploymentPlan,
    node: NodePlan,
    host: TargetInput,
    secret_env: pulumi.Input[Mapping[str, str]],
    files: NodeFiles | None = None,
) -> EngineServiceArgs:
    """EngineService arguments for ``node``: its launch files (``files``, from
    :func:`node_files`; rendered here when None), secrets and readiness check. Files known
    only during the update stay out of the props (``EngineServiceArgs.files``); a host
    known only then makes the props an Output."""
    if files is None:
        files = _engine_files(plan, node, plan.image.image)
    known = files if isinstance(files, dict) else {}
    props = bound(
        lambda target: EngineServiceProps(
            host=target,
            remote_dir=node.remote_dir,
            files=known,
            container=plan.engine.container_name if plan.engine.runtime == "docker" else None,
            readiness=_readiness_check(plan, node),
        ),
        host,
    )
    deferred = files if isinstance(files, pulumi.Output) else None
    return EngineServiceArgs(props, secret_env, deferred)


def engine_cluster_props(
    plan: DeploymentPlan,
    hosts: Sequence[HostTarget],
    files: Sequence[NodeFiles] | None = None,
) -> EngineClusterProps:
    """EngineCluster properties for a multi-node plan: every node's launch files (from
    :func:`node_files`, in rank order; rendered here when None), and the head's readiness
    check. Files known only during the update are left empty here: the program passes
    them to :class:`~amdfleet.providers.engine_cluster.EngineCluster` apart."""
    if files is None:
        files = [_engine_files(plan, node, plan.image.image) for node in plan.nodes]
    return EngineClusterProps(
        nodes=tuple(
            EngineClusterNode(
                name=node.name,
                host=host,
                remote_dir=node.remote_dir,
                files=node_files if isinstance(node_files, dict) else {},
                container=plan.engine.container_name if plan.engine.runtime == "docker" else None,
            )
            for node, host, node_files in zip(plan.nodes, hosts, files, strict=True)
        ),
        readiness=_readiness_check(plan, plan.nodes[0]),
    )


# ------------------------------------------------------------------------ helpers


def _rank_files(plan: DeploymentPlan, ref: str | None, rank: int) -> dict[str, Any]:
    return launch_files(plan, plan.nodes[rank], ref if ref is not None else plan.image.image)


def _engine_files(plan: DeploymentPlan, node: NodePlan, image: str | None) -> dict[str, EngineFile]:
    return {
        PurePosixPath(f.path).name: EngineFile(content=f.content, mode=f.mode)
        for f in render_node(plan, node.rank, image=image)
    }


def _readiness_check(plan: DeploymentPlan, node: NodePlan) -> ReadinessCheck:
    readiness = plan.engine.readiness
    return ReadinessCheck(
        serves_api=node.serves_api,
        base_url=readiness.base_url,
        paths=readiness.paths,
        served_name=readiness.served_name,
        timeout_s=readiness.timeout_s,
    )


def _cluster_node(plan: DeploymentPlan, node: NodePlan, target: HostTarget) -> ClusterCheckNode:
    address = node.cluster_address or node.address
    if not address:
        issue = config_issue("fleet", f"node {node.name} has no cluster address yet", "")
        raise PlanError([issue], f"stack {plan.stack}")
    return ClusterCheckNode(
        name=node.name,
        host=target,
        cluster_address=address,
        network_interface=node.network_interface,
        rdma_devices=node.rdma_devices,
    )


def _gloo_run(
    plan: DeploymentPlan,
    check: FabricPlan,
    node: NodePlan,
    node_env: Mapping[str, str],
    host: HostTarget,
) -> FabricRun:
    script = f"{check.work_dir}/{SCRIPT_NAME}"
    argv = fabric.gloo_argv(
        check.python,
        script,
        rank=node.rank,
        world_size=len(plan.nodes),
        head=plan.head.cluster_address or "",
        port=check.port,
        sweep=_sweep(check),
        timeout_s=check.timeout_s,
    )
    env = fabric.process_env(node_env, check.extra_env, fabric.GLOO_ENV_PREFIXES)
    if check.image is None:
        return FabricRun(host=host, command=fabric.on_host(argv, env), reports=node.rank == 0)
    mount = f"{check.work_dir}:{check.work_dir}:ro"
    command = fabric.in_image(
        argv, check.image, check.container_name, env, gpus=False, mounts=[mount]
    )
    return FabricRun(host=host, command=command, reports=node.rank == 0)


def _rccl_run(
    check: FabricPlan, pairs: Sequence[tuple[NodePlan, HostTarget]], head_env: Mapping[str, str]
) -> FabricRun:
    head, host = pairs[0]
    env = fabric.process_env(head_env, check.extra_env, fabric.NCCL_ENV_PREFIXES)
    if len(pairs) == 1:
        argv = fabric.all_reduce_perf_argv(check.all_reduce_perf, _sweep(check), head.gpus)
    else:
        test = fabric.all_reduce_perf_argv(check.all_reduce_perf, _sweep(check), 1)
        hosts = [(node.cluster_address or node.name, node.gpus) for node, _ in pairs]
        argv = fabric.mpirun_argv(check.mpirun, hosts, env, check.mpirun_args, test)
    if check.image is None:
        return FabricRun(host=host, command=fabric.on_host(argv, env), reports=True)
    command = fabric.in_image(argv, check.image, check.container_name, env)
    return FabricRun(host=host, command=command, reports=True)


def _sweep(check: FabricPlan) -> fabric.Sweep:
    return fabric.Sweep(check.min_bytes, check.max_bytes, check.iters, check.warmup_iters)


def _parity_sha256(plan: DeploymentPlan) -> str | None:
    """The parity reference's sha256 (the program checked it before any resource)."""
    from amdfleet.verify.reference import ParityReference

    parity = plan.verification.input.parity
    return ParityReference.load(parity.reference).sha256 if parity else None
