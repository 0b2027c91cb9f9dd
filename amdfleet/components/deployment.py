"""The :class:`Deployment` component: image, weights and engine on every node of a
:class:`~amdfleet.components.fleet.Fleet` (after the cluster and fabric checks of a
multi-node stack), and the verification that gates the stack's readiness (see
:mod:`amdfleet.components`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pulumi

from amdfleet.components.fleet import Fleet
from amdfleet.components.images import stage_images
from amdfleet.components.props import (
    NodeFiles,
    bound,
    cluster_check_props,
    command_check_props,
    engine_cluster_props,
    engine_service_props,
    fabric_check_props,
    model_weights_props,
    node_files,
    verification_props,
)
from amdfleet.plan import DeploymentPlan, NodePlan
from amdfleet.plan.models import LifetimePlan
from amdfleet.providers.cluster_check import ClusterCheck
from amdfleet.providers.command_check import EngineCommandCheck
from amdfleet.providers.engine_cluster import EngineCluster
from amdfleet.providers.engine_image import EngineImage
from amdfleet.providers.engine_service import EngineService
from amdfleet.providers.fabric_check import FabricCheck, FabricCheckProps
from amdfleet.providers.model_weights import ModelWeights
from amdfleet.providers.readiness import VerificationGate
from amdfleet.providers.verification import Verification
from amdfleet.remote.cluster import cluster_facts, collective_env


class Deployment(pulumi.ComponentResource):
    """Image, weights and engine on every node (after the cluster and fabric checks of a
    multi-node stack), and the verification gate."""

    OUTPUT_NAMES = (
        "endpoint",
        "hosts",
        "engine",
        "verification",
        "ready",
        "verified_at",
        "campaign",
    )
    """The outputs a stack exports from its deployment (beside model and api_key)."""

    hosts: pulumi.Output[list[dict[str, Any]]]
    endpoint: str | pulumi.Output[str]
    model: str
    api_key: pulumi.Output[str] | None
    engine: pulumi.Output[dict[str, Any]]
    verification: pulumi.Output[dict[str, Any]]
    ready: pulumi.Output[bool]
    verified_at: pulumi.Output[str | None]
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
        self._plan = plan  # what to register; the values from fleet.plan (its addresses)
        self._on_hosts = fleet.plan
        # The head's address: the plan's, or (a cloud fleet) its instance's once it exists.
        self._base_url = bound(plan.endpoint_at, fleet.addresses[0])
        staged = stage_images(
            name,
            plan,
            fleet.targets,
            fleet.facts,
            secrets,
            parent=self,
            depends_on=fleet.ssh_hosts,
        )
        images = staged.images
        self._image_ref = staged.ref  # the digest every node runs, once known
        checked = EngineCommandCheck(
            f"{name}-command-check",
            bound(command_check_props, self._on_hosts, fleet.targets[0]),
            self._opts([*fleet.ssh_hosts, *images[:1]]),  # after every host passed preflight
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
        self.endpoint = bound("{}/v1".format, self._base_url)
        self.model = plan.model.served_name
        key = secrets.get(plan.serving.api_key_secret or "")
        self.api_key = pulumi.Output.secret(key) if key is not None else None
        digests = [image.digest for image in images] if images else []
        ref = self._image_ref if self._image_ref is not None else plan.image.image
        self.engine = pulumi.Output.all(
            self._on_hosts, services[0].files_hash, ref, *digests
        ).apply(lambda values: _engine_output(values[0], values[1], values[2], values[3:]))
        self.campaign = services[0].started_at.apply(lambda at: campaign_output(plan.campaign, at))
        self.hosts = _hosts_output(fleet, cluster)
        check = self._verification(name, fleet, weights, services, images)
        fabric_result = fabric.result if fabric is not None else {"enabled": False}
        if check is None:
            self.verification = pulumi.Output.all(fabric_result).apply(
                lambda values: {"enabled": False, "fabric": values[0]}
            )
            self.ready = pulumi.Output.from_input(False)
            self.verified_at = pulumi.Output.from_input(None)
        else:
            self.verification = pulumi.Output.all(check.result, fabric_result).apply(
                lambda values: {**values[0], "fabric": values[1]}
            )
            self.ready = check.passed
            self.verified_at = check.verified_at
            VerificationGate(
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
                "verified_at": self.verified_at,
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
        nodes = list(zip(plan.nodes, fleet.ssh_hosts, strict=True))
        return ClusterCheck(
            f"{name}-cluster",
            bound(
                lambda on_hosts, *targets: cluster_check_props(on_hosts, targets),
                self._on_hosts,
                *fleet.targets,
            ),
            self._opts([*fleet.ssh_hosts, *images, *weights]),
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
        # The runs use the cluster's interfaces and (in the engine image) the digest every
        # node pulled, and a cloud fleet's hosts and addresses: known only during the
        # update, so the props are built then.
        interfaces = cluster.interfaces if cluster is not None else None
        props: FabricCheckProps | pulumi.Output[FabricCheckProps] = bound(
            lambda on_hosts, interfaces, ref, *targets: fabric_check_props(
                on_hosts, targets, interfaces, ref
            ),
            self._on_hosts,
            interfaces,
            self._image_ref,
            *fleet.targets,
        )
        depends: list[pulumi.Resource] = [*fleet.ssh_hosts, *images]
        if cluster is not None:
            depends.append(cluster)
        return FabricCheck(f"{name}-fabric", props, self._opts(depends))

    def _opts(self, depends_on: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=list(depends_on))

    def _files(self, node: NodePlan) -> NodeFiles:
        """A node's launch files, rendered once: running the plan's image, or the digest
        every node pulled once it is known (and the fleet's addresses, when bound then)."""
        return node_files(self._on_hosts, node.rank, self._image_ref)

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
                bound(
                    functools.partial(model_weights_props, plan, in_image=bool(images)),
                    fleet.targets[node.rank],
                ),
                self._opts([*fleet.ssh_hosts, *images[node.rank : node.rank + 1], checked]),
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
        files = [self._files(node) for node in plan.nodes]
        props = bound(
            lambda on_hosts, *targets: engine_cluster_props(on_hosts, targets, files),
            self._on_hosts,
            *fleet.targets,
        )
        depends = [*fleet.ssh_hosts, *weights, *images, *self._gates]
        deferred = [f if isinstance(f, pulumi.Output) else None for f in files]
        return EngineCluster(
            f"{name}-engine",
            props,
            self._opts(depends),
            secret_env=_secret_env(plan.nodes[0], secrets),
            cluster_env=self._cluster_env,
            files=deferred if any(f is not None for f in deferred) else None,
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
        args = engine_service_props(
            self._plan,
            node,
            fleet.targets[node.rank],
            _secret_env(node, secrets),
            self._files(node),
        )
        depends = [
            *fleet.ssh_hosts,
            weights[node.rank],
            *images[node.rank : node.rank + 1],
            *self._gates,
        ]
        adopt = pulumi.ResourceOptions(import_=self._plan.engine.adopt)
        return EngineService(
            f"{name}-engine-{node.name}",
            args.props,
            pulumi.ResourceOptions.merge(self._opts(depends), adopt),
            secret_env=args.secret_env,
            files=args.files,
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
            bound(functools.partial(verification_props, plan), fleet.targets[0], self._base_url),
            self._opts(services),
            api_key=api_key,
            engine_fingerprint=fingerprint,
            tokenizer_path=weights[0].path,
        )


def _secret_env(
    node: NodePlan, secrets: Mapping[str, pulumi.Output[str] | None]
) -> pulumi.Output[dict[str, Any]]:
    """``node``'s secret environment (variable → the stack secret it names), as a secret."""
    values: pulumi.Output[dict[str, Any]] = pulumi.Output.all(
        **{env: secrets[key] for env, key in node.secret_env.items()}
    )
    return pulumi.Output.secret(values)


def campaign_output(campaign: LifetimePlan, started_at: str | None) -> dict[str, Any]:
    """The lifetime policy with the engine's start and, given a TTL, its expiry."""
    out = {**campaign.model_dump(mode="json"), "started_at": started_at, "expires_at": None}
    if started_at and campaign.ttl_hours:
        expires = datetime.fromisoformat(started_at) + timedelta(hours=campaign.ttl_hours)
        out["expires_at"] = expires.isoformat(timespec="seconds")
    return out


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
        "files_hash": files_hash,
        "argv": list(plan.head.argv),
    }
