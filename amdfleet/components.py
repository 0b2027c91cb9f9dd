"""The Pulumi components: a :class:`Fleet` of checked hosts and a verified
:class:`Deployment` on it.

``Fleet`` registers one :class:`~amdfleet.providers.ssh_host.SshHost` per node (facts
and preflight). ``Deployment`` stages the image and the weights on every node in
parallel once every host has passed preflight (a fleet with one failing host starts
nowhere). The image is one digest on every node: a build runs once on the build host
and is pushed (:class:`~amdfleet.providers.image_build.EngineImageBuild`), or a pre-built
image's tag is pinned to a digest once (:class:`~amdfleet.providers.image_pin.ImagePin`);
nodes pull that digest and their launch files run it. A multi-node stack then passes the
:class:`~amdfleet.providers.cluster_check.ClusterCheck` (the head's ports reached from
every node, each node's collective interface derived from its facts, the nodes agree)
and, when the stack asks, the :class:`~amdfleet.providers.fabric_check.FabricCheck`,
before any engine starts. One node runs an
:class:`~amdfleet.providers.engine_service.EngineService`; several run one
:class:`~amdfleet.providers.engine_cluster.EngineCluster` (they start, fail and restart
together). Readiness is gated on a
:class:`~amdfleet.providers.verification.Verification` run against the endpoint: the
``ready`` output is its ``passed``, and a
:class:`~amdfleet.providers.readiness.ReadinessGate` fails the update while it is false.
Everything is a child of its component (``parent=self``) and each component registers
its outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import pulumi

from amdfleet import engines, hostkeys
from amdfleet.config import LifetimeSpec
from amdfleet.errors import PlanError
from amdfleet.findings import config_issue
from amdfleet.plan import DeploymentPlan, NodePlan
from amdfleet.plan.layout import engine_python
from amdfleet.providers.cluster_check import ClusterCheck, cluster_check_props
from amdfleet.providers.command_check import (
    EngineCommandCheck,
    EngineCommandCheckProps,
    ParseCheck,
)
from amdfleet.providers.engine_cluster import EngineCluster, EngineClusterProps, EngineNode
from amdfleet.providers.engine_image import EngineImage, EngineImageProps
from amdfleet.providers.engine_node import ReadinessCheck, RenderedFile
from amdfleet.providers.engine_service import (
    EngineService,
    EngineServiceArgs,
    EngineServiceProps,
)
from amdfleet.providers.fabric_check import FabricCheck, fabric_check_props
from amdfleet.providers.image_build import (
    EngineImageBuild,
    EngineImageBuildProps,
    fleet_archs_of,
)
from amdfleet.providers.image_pin import ImagePin, ImagePinProps
from amdfleet.providers.model_weights import ModelWeights, ModelWeightsProps
from amdfleet.providers.readiness import ReadinessGate
from amdfleet.providers.ssh_host import SshHost, SshHostProps
from amdfleet.providers.verification import Verification, VerificationProps
from amdfleet.remote.cluster import cluster_facts, collective_env
from amdfleet.remote.transport.target import HostTarget
from amdfleet.render import render_dockerfile, render_node

IMAGE_TIMEOUT_S = 3 * 3600
_NO_TARGET = "list the host under fleet.hosts"


class Fleet(pulumi.ComponentResource):
    """The stack's hosts, each connected, inventoried and preflight-checked."""

    hosts: list[SshHost]
    targets: list[HostTarget]
    inventory: pulumi.Output[list[dict[str, Any]]]

    def __init__(
        self, name: str, plan: DeploymentPlan, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if not pulumi.runtime.is_dry_run():
            _refuse_placeholder_host_keys(plan)
        super().__init__("amdfleet:index:Fleet", name, None, opts)
        self.targets = [_target(plan, node) for node in plan.nodes]
        self.hosts = [
            SshHost(
                f"{name}-{node.name}",
                SshHostProps(host=target, requirement=node.requirement),
                pulumi.ResourceOptions(parent=self),
            )
            for node, target in zip(plan.nodes, self.targets, strict=True)
        ]
        self.inventory = pulumi.Output.all(*[h.facts for h in self.hosts]).apply(
            lambda facts: [_inventory(node, f) for node, f in zip(plan.nodes, facts, strict=True)]
        )
        self.register_outputs({"inventory": self.inventory})


class Deployment(pulumi.ComponentResource):
    """Image, weights and engine on every node (after the cluster and fabric checks of a
    multi-node stack), and the verification gate."""

    OUTPUT_NAMES = ("endpoint", "hosts", "engine", "verification", "ready", "campaign")
    """The outputs a stack exports from its deployment (beside model and api_key)."""

    hosts: pulumi.Output[list[dict[str, Any]]]
    endpoint: str
    model: str
    api_key: pulumi.Output[str] | None
    engine: pulumi.Output[dict[str, Any]]
    verification: pulumi.Output[dict[str, Any]]
    ready: pulumi.Output[bool]
    campaign: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        plan: DeploymentPlan,
        fleet: Fleet,
        secrets: Mapping[str, pulumi.Output[str] | None],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("amdfleet:index:Deployment", name, None, opts)
        self._plan = plan
        staged = stage_images(
            name,
            plan,
            fleet.targets,
            [host.facts for host in fleet.hosts],
            secrets,
            parent=self,
            depends_on=fleet.hosts,
        )
        images = staged.images
        self._image_ref = staged.ref  # the digest every node runs, once known
        checked = EngineCommandCheck(
            f"{name}-command-check",
            command_check_props(plan, fleet.targets[0]),
            self._opts([*fleet.hosts, *images[:1]]),  # after every host passed preflight
            image=self._image_ref if images else None,
        )
        weights = self._weights(name, fleet, images, secrets, checked)
        cluster = self._cluster_check(name, fleet, images, weights)
        fabric = self._fabric_check(name, fleet, images, cluster)
        self._gates: list[pulumi.Resource] = [r for r in (cluster, fabric) if r is not None]
        self._cluster_env = (
            [
                cluster.interfaces.apply(functools.partial(_collective_env, node=node.name))
                for node in plan.nodes
            ]
            if cluster is not None
            else None
        )
        services = self._services(name, fleet, images, weights, secrets)
        self.endpoint = f"{plan.endpoint}/v1"
        self.model = plan.model.served_name
        key = secrets.get(plan.serving.api_key_secret or "")
        self.api_key = pulumi.Output.secret(key) if key is not None else None
        digests = [image.digest for image in images] if images else []
        ref = self._image_ref if self._image_ref is not None else plan.image.image
        self.engine = pulumi.Output.all(services[0].files_hash, ref, *digests).apply(
            lambda values: _engine_output(plan, values[0], values[1], values[2:])
        )
        self.campaign = services[0].started_at.apply(lambda at: campaign_output(plan.campaign, at))
        self.hosts = _hosts_output(fleet, cluster)
        check = self._verification(name, fleet, weights, services, images)
        fabric_result = fabric.result if fabric is not None else {"enabled": False}
        if check is None:
            self.verification = pulumi.Output.all(fabric_result).apply(
                lambda values: {"enabled": False, "fabric": values[0]}
            )
            self.ready = pulumi.Output.from_input(False)
        else:
            self.verification = pulumi.Output.all(check.result, fabric_result).apply(
                lambda values: {**values[0], "fabric": values[1]}
            )
            self.ready = check.passed
            ReadinessGate(
                f"{name}-readiness",
                self._opts([check]),
                # From the merged output, so the gate cannot fail the update before the
                # stack's `verification` and `ready` outputs are resolved and recorded.
                passed=self.verification.apply(lambda result: bool(result.get("passed"))),
                failures=check.failures,
                verdict_table=check.verdict_table,
            )
        self.register_outputs(
            {
                "hosts": self.hosts,
                "endpoint": self.endpoint,
                "model": self.model,
                "engine": self.engine,
                "verification": self.verification,
                "ready": self.ready,
                "campaign": self.campaign,
            }
        )

    def _cluster_check(
        self, name: str, fleet: Fleet, images: list[EngineImage], weights: list[ModelWeights]
    ) -> ClusterCheck | None:
        """Multi-node only: every node reaches the head's ports (tested from the nodes),
        the interface carrying each node's cluster address, and that the nodes agree;
        after staging (it compares image digests and model commits), before any engine."""
        plan = self._plan
        if len(plan.nodes) == 1:
            return None
        nodes = list(zip(plan.nodes, fleet.hosts, strict=True))
        return ClusterCheck(
            f"{name}-cluster",
            cluster_check_props(plan, fleet.targets),
            self._opts([*fleet.hosts, *images, *weights]),
            facts={node.name: host.facts.apply(cluster_facts) for node, host in nodes},
            image_digests=(
                {n.name: image.digest for n, image in zip(plan.nodes, images, strict=True)}
                if images
                else None
            ),
            model_commits={n.name: w.commit for n, w in zip(plan.nodes, weights, strict=True)},
        )

    def _fabric_check(
        self,
        name: str,
        fleet: Fleet,
        images: list[EngineImage],
        cluster: ClusterCheck | None,
    ) -> FabricCheck | None:
        """The stack's optional collective-bandwidth test, on the interfaces the cluster
        check derived, before any engine starts (they would share the links)."""
        plan = self._plan
        if plan.fabric is None:
            return None
        targets = fleet.targets
        # The runs use the cluster's interfaces and (in the engine image) the digest every
        # node pulled: both known only during the update.
        interfaces = cluster.interfaces if cluster is not None else None
        ref = self._image_ref
        runs = (
            pulumi.Output.all(interfaces, ref).apply(
                lambda values: [
                    run.model_dump(mode="json")
                    for run in fabric_check_props(
                        plan_with_image(plan, values[1]) if values[1] else plan,
                        targets,
                        values[0],
                    ).runs
                ]
            )
            if interfaces is not None or ref is not None
            else None
        )
        depends: list[pulumi.Resource] = [*fleet.hosts, *images]
        if cluster is not None:
            depends.append(cluster)
        return FabricCheck(
            f"{name}-fabric", fabric_check_props(plan, targets), self._opts(depends), runs=runs
        )

    def _opts(self, depends_on: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=list(depends_on))

    def _files(self, node: NodePlan) -> pulumi.Output[dict[str, Any]] | None:
        """A node's launch files running the pinned digest (None: the plan's image is
        what runs, and the props' files stand)."""
        if self._image_ref is None:
            return None
        return self._image_ref.apply(functools.partial(launch_files, self._plan, node))

    def _weights(
        self,
        name: str,
        fleet: Fleet,
        images: list[EngineImage],
        secrets: Mapping[str, pulumi.Output[str] | None],
        checked: EngineCommandCheck,
    ) -> list[ModelWeights]:
        """Every node's weights, once the engine accepted the command (so a command it
        would refuse fails in seconds, before a download of hours)."""
        plan = self._plan
        weights = plan.weights
        token = secrets.get(weights.hf_token_secret) if weights.hf_token_secret else None
        return [
            ModelWeights(
                f"{name}-weights-{node.name}",
                ModelWeightsProps(
                    host=fleet.targets[node.rank],
                    repo=weights.repo,
                    revision=weights.revision,
                    cache_dir=weights.cache_dir,
                    local_path=weights.local_path,
                    python=weights.python,
                    docker_image=plan.image.image if images else None,
                    hub_endpoint=weights.hub_endpoint,
                    timeout_s=weights.timeout_s,
                    keep_on_delete=weights.keep_on_delete,
                ),
                self._opts([*fleet.hosts, *images[node.rank : node.rank + 1], checked]),
                hf_token=token,
                docker_image=self._image_ref if images else None,
            )
            for node in plan.nodes
        ]

    def _services(
        self,
        name: str,
        fleet: Fleet,
        images: list[EngineImage],
        weights: list[ModelWeights],
        secrets: Mapping[str, pulumi.Output[str] | None],
    ) -> list[EngineService | EngineCluster]:
        plan = self._plan
        if len(plan.nodes) > 1:
            return [self._cluster(name, fleet, images, weights, secrets)]
        return [self._service(name, plan.nodes[0], fleet, images, weights, secrets)]

    def _cluster(
        self,
        name: str,
        fleet: Fleet,
        images: list[EngineImage],
        weights: list[ModelWeights],
        secrets: Mapping[str, pulumi.Output[str] | None],
    ) -> EngineCluster:
        """A multi-node engine is one resource: its nodes start, fail and restart together
        (workers cannot rejoin a running head)."""
        plan = self._plan
        head = plan.nodes[0]
        values: pulumi.Output[dict[str, Any]] = pulumi.Output.all(
            **{env: secrets[key] for env, key in head.secret_env.items()}
        )
        props = engine_cluster_props(plan, [fleet.targets[n.rank] for n in plan.nodes])
        depends = [*fleet.hosts, *weights, *images, *self._gates]
        files = [self._files(node) for node in plan.nodes]
        return EngineCluster(
            f"{name}-engine",
            props,
            self._opts(depends),
            secret_env=pulumi.Output.secret(values),
            cluster_env=self._cluster_env,
            files=None if self._image_ref is None else files,
        )

    def _service(
        self,
        name: str,
        node: NodePlan,
        fleet: Fleet,
        images: list[EngineImage],
        weights: list[ModelWeights],
        secrets: Mapping[str, pulumi.Output[str] | None],
    ) -> EngineService:
        values: pulumi.Output[dict[str, Any]] = pulumi.Output.all(
            **{env: secrets[key] for env, key in node.secret_env.items()}
        )
        secret_env: pulumi.Output[dict[str, Any]] = pulumi.Output.secret(values)
        args = engine_service_props(self._plan, node, fleet.targets[node.rank], secret_env)
        depends = [
            *fleet.hosts,
            weights[node.rank],
            *images[node.rank : node.rank + 1],
            *self._gates,
        ]
        return EngineService(
            f"{name}-engine-{node.name}",
            args.props,
            self._opts(depends),
            secret_env=args.secret_env,
            files=self._files(node),
        )

    def _verification(
        self,
        name: str,
        fleet: Fleet,
        weights: list[ModelWeights],
        services: Sequence[EngineService | EngineCluster],
        images: list[EngineImage],
    ) -> Verification | None:
        plan = self._plan
        if not plan.verification.enabled:
            return None
        api_key = self.api_key
        digests = [image.digest for image in images]
        # The start time too: an engine restarted by a repair is verified again.
        started = [s.started_at for s in services]
        fingerprint = pulumi.Output.all(
            *[s.files_hash for s in services], *digests, *started
        ).apply(lambda values: "|".join(str(v) for v in values))
        return Verification(
            f"{name}-verification",
            VerificationProps(
                base_url=plan.endpoint,
                model=plan.model.served_name,
                spec=plan.verification.spec,
                tokenizer_host=fleet.targets[0],
                report_dir=plan.verification.report_dir,
                parity_reference_sha256=_parity_sha256(plan),
            ),
            self._opts(services),
            api_key=api_key,
            engine_fingerprint=fingerprint,
            tokenizer_path=weights[0].path,
        )


@dataclass(frozen=True)
class StagedImages:
    """The engine image on every node, and the digest reference they pull and run (None
    when the plan's image reference is what runs: a digest already, or a per-node
    build)."""

    images: list[EngineImage]
    ref: pulumi.Output[str] | None


def stage_images(
    name: str,
    plan: DeploymentPlan,
    targets: Sequence[HostTarget],
    facts: Sequence[pulumi.Input[Mapping[str, Any]]],
    secrets: Mapping[str, pulumi.Output[str] | None],
    *,
    parent: pulumi.Resource | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> StagedImages:
    """Register what gets the plan's image onto every node (docker runtime), after
    ``depends_on`` (the fleet's preflight):

    - a build with a registry: one :class:`EngineImageBuild` on the build host, then
      every node pulls the pushed digest;
    - a pre-built image named by a tag: one :class:`ImagePin` on the head, then every node
      pulls the pinned digest;
    - a build without a registry, or an image given by digest: each node stages it.

    ``facts`` are the nodes' host facts (the build refuses gfx targets their GPUs lack).
    """
    image = plan.image
    if plan.engine.runtime != "docker" or image.image is None:
        return StagedImages([], None)

    def opts(depends: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, depends_on=list(depends))

    password = (
        secrets.get(image.registry_password_secret) if image.registry_password_secret else None
    )
    names = [node.name for node in plan.nodes]
    archs = pulumi.Output.all(**dict(zip(names, facts, strict=True))).apply(fleet_archs_of)
    source: pulumi.Resource | None = None
    ref: pulumi.Output[str] | None = None
    if image.build and image.registry:
        if image.build_host in names:
            target = targets[names.index(str(image.build_host))]
        else:  # a separate build host, or a cloud fleet's head
            target = image.build_target or targets[0]
        dockerfile = render_dockerfile(plan)
        build = EngineImageBuild(
            f"{name}-image-build",
            EngineImageBuildProps(
                host=target,
                image=str(image.image),
                dockerfile=dockerfile.content,
                content_hash=str(image.content_hash),
                gfx_targets=image.gfx_targets,
                build_hours=image.build_hours,
                timeout_s=image.build_timeout_s,
                work_dir=image.build_work_dir,
                registry=str(image.registry),
                registry_username=image.registry_username,
            ),
            # After preflight of every host: a fleet that fails preflight builds nothing.
            opts(depends_on),
            fleet_archs=archs,
            registry_password=password,
        )
        source, ref = build, build.ref
    elif image.pin:
        pin = ImagePin(
            f"{name}-image-pin",
            ImagePinProps(host=targets[0], image=image.image, timeout_s=IMAGE_TIMEOUT_S),
            opts(depends_on[:1]),
        )
        source, ref = pin, pin.ref
    on_node = image.build and not image.registry
    dockerfile_on_node = render_dockerfile(plan) if on_node else None
    images = [
        EngineImage(
            f"{name}-image-{node.name}",
            EngineImageProps(
                host=targets[node.rank],
                image=image.image,
                dockerfile=dockerfile_on_node.content if dockerfile_on_node else None,
                dockerfile_hash=dockerfile_on_node.sha256 if dockerfile_on_node else None,
                build_dir=f"{node.remote_dir}-image",
                timeout_s=image.build_timeout_s if on_node else IMAGE_TIMEOUT_S,
                keep_on_delete=False,
                registry=image.registry,
                registry_username=image.registry_username,
                gfx_targets=image.gfx_targets,
                build_hours=image.build_hours,
            ),
            opts([*depends_on, *([source] if source else [])]),
            image=ref,
            host_archs=archs.apply(functools.partial(_archs_of, node=node.name))
            if on_node
            else None,
            registry_password=password if image.registry else None,
        )
        for node in plan.nodes
    ]
    return StagedImages(images, ref)


def command_check_props(plan: DeploymentPlan, head: HostTarget) -> EngineCommandCheckProps:
    """The deploy-time check of every node's command, run on the head: in the plan's image
    (the program passes the pinned digest in its place) or the engine's virtualenv."""
    engine = engines.engine(plan.engine.name)
    docker = plan.engine.runtime == "docker"
    python = "python3" if docker else engine_python(plan.head.argv)
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


def engine_service_props(
    plan: DeploymentPlan,
    node: NodePlan,
    host: HostTarget,
    secret_env: pulumi.Input[Mapping[str, str]],
) -> EngineServiceArgs:
    """EngineService arguments for ``node``: its rendered files, secrets and readiness
    check."""
    props = EngineServiceProps(
        host=host,
        remote_dir=node.remote_dir,
        files=_rendered_files(plan, node),
        container=plan.engine.container_name if plan.engine.runtime == "docker" else None,
        readiness=_readiness_check(plan, node),
    )
    return EngineServiceArgs(props, secret_env)


def _rendered_files(plan: DeploymentPlan, node: NodePlan) -> dict[str, RenderedFile]:
    return {
        PurePosixPath(f.path).name: RenderedFile(content=f.content, mode=f.mode)
        for f in render_node(plan, node.rank)
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


def engine_cluster_props(plan: DeploymentPlan, hosts: Sequence[HostTarget]) -> EngineClusterProps:
    """EngineCluster properties for a multi-node plan: every node's rendered files, in
    rank order, and the head's readiness check."""
    return EngineClusterProps(
        nodes=tuple(
            EngineNode(
                name=node.name,
                host=host,
                remote_dir=node.remote_dir,
                files=_rendered_files(plan, node),
                container=plan.engine.container_name if plan.engine.runtime == "docker" else None,
            )
            for node, host in zip(plan.nodes, hosts, strict=True)
        ),
        readiness=_readiness_check(plan, plan.nodes[0]),
    )


def campaign_output(campaign: LifetimeSpec, started_at: str | None) -> dict[str, Any]:
    """The campaign policy with the engine's start and, given a TTL, its expiry."""
    out = {**campaign.model_dump(mode="json"), "started_at": started_at, "expires_at": None}
    if started_at and campaign.ttl_hours:
        expires = datetime.fromisoformat(started_at) + timedelta(hours=campaign.ttl_hours)
        out["expires_at"] = expires.isoformat(timespec="seconds")
    return out


def _refuse_placeholder_host_keys(plan: DeploymentPlan) -> None:
    """``pulumi up`` connects to the hosts: a placeholder pin (accepted by ``amdfleet plan``
    and ``pulumi preview``, which connect to nothing) stops it before anything registers."""
    targets = [node.target for node in plan.nodes if node.target]
    separate = plan.image.build_host not in [node.name for node in plan.nodes]
    build_target = plan.image.build_target if separate else None
    hostkeys.refuse_placeholder_host_keys(targets, build_target, f"stack {plan.stack}")


def _target(plan: DeploymentPlan, node: NodePlan) -> HostTarget:
    if node.target is None:  # a cloud instance that does not exist yet
        issue = config_issue("fleet", f"node {node.name} has no host to connect to", _NO_TARGET)
        raise PlanError([issue], f"stack {plan.stack}")
    return node.target


def _archs_of(archs: Mapping[str, list[str]], node: str) -> list[str]:
    return list(archs.get(node, []))


def _collective_env(interfaces: Mapping[str, str | None], node: str) -> dict[str, str]:
    return collective_env(interfaces.get(node))


def _hosts_output(
    fleet: Fleet, cluster: ClusterCheck | None
) -> pulumi.Output[list[dict[str, Any]]]:
    """The fleet's inventory, each host with the interface its collective traffic uses
    (derived by the cluster check; None on a single node)."""
    if cluster is None:
        return fleet.inventory.apply(
            lambda hosts: [{**h, "collective_interface": None} for h in hosts]
        )
    return pulumi.Output.all(fleet.inventory, cluster.interfaces).apply(
        lambda values: [{**h, "collective_interface": values[1].get(h["name"])} for h in values[0]]
    )


def _inventory(node: NodePlan, facts: Mapping[str, Any]) -> dict[str, Any]:
    gpus = facts.get("gpus") or []
    return {
        "name": node.name,
        "rank": node.rank,
        "role": node.role,
        "address": node.address,
        "hostname": facts.get("hostname"),
        "os": facts.get("os_name"),
        "kernel": facts.get("kernel"),
        "rocm_version": facts.get("rocm_version"),
        "amdgpu_version": facts.get("amdgpu_version"),
        "docker_version": facts.get("docker_version"),
        "gpus": [
            {
                k: g.get(k)
                for k in ("index", "accelerator", "arch", "device_id", "vram_bytes", "bdf")
            }
            for g in gpus
        ],
    }


def launch_files(plan: DeploymentPlan, node: NodePlan, ref: str) -> dict[str, Any]:
    """``node``'s rendered launch files (as the engine providers take them, JSON) running
    image ``ref``: the digest reference every node pulled."""
    rendered = _rendered_files(plan_with_image(plan, ref), node)
    return {name: f.model_dump(mode="json") for name, f in rendered.items()}


def plan_with_image(plan: DeploymentPlan, ref: str) -> DeploymentPlan:
    """``plan`` running image ``ref`` (the pinned digest reference) on every node, in the
    engine and in the fabric check."""
    update: dict[str, Any] = {"image": plan.image.model_copy(update={"image": ref})}
    if plan.fabric is not None and plan.fabric.image is not None:
        update["fabric"] = plan.fabric.model_copy(update={"image": ref})
    return plan.model_copy(update=update)


def _engine_output(
    plan: DeploymentPlan, files_hash: str, ref: str | None, digests: Sequence[str]
) -> dict[str, Any]:
    image = plan.image
    return {
        "name": plan.engine.name,
        "version": plan.engine.version,
        "runtime": plan.engine.runtime,
        "image": ref,
        "image_source": image.image if image.image != ref else None,
        "image_digest": ref.partition("@")[2] if ref and "@" in ref else None,
        "image_build": (
            {
                "content_hash": image.content_hash,
                "registry": image.registry,
                "build_host": image.build_host,
                "gfx_targets": list(image.gfx_targets),
                "aiter_ref": image.aiter_ref,
                "aiter_commit": image.aiter_commit,
                "vllm_ref": image.vllm_ref,
                "vllm_commit": image.vllm_commit,
                "base_image": image.base_image,
            }
            if image.build
            else None
        ),
        "image_digests": list(digests),
        "command_hash": files_hash,
        "argv": list(plan.head.argv),
    }


def _parity_sha256(plan: DeploymentPlan) -> str | None:
    """The parity reference's sha256 (the program checked it before any resource)."""
    from amdfleet.verify.reference import ParityReference

    parity = plan.verification.spec.parity
    return ParityReference.load(parity.reference).sha256 if parity else None
