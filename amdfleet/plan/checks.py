"""Feasibility checks: each returns the issues it finds (and warnings where a layout
works but is known to be slow or unsafe); none raises and none depends on another."""

from __future__ import annotations

import math

from amdfleet import catalog, engines
from amdfleet.catalog.clouds import CloudDefaults, CloudSize, cloud, cloud_sizes
from amdfleet.catalog.gpus import Accelerator
from amdfleet.catalog.releases import COMMIT_RE
from amdfleet.config import (
    CloudFleetSpec,
    HostSpec,
    ModelArchitecture,
    StackSpec,
)
from amdfleet.findings import Finding, config_issue
from amdfleet.hostkeys import placeholder_build_host_key, placeholder_host_keys
from amdfleet.plan.checkpoint import Resolved
from amdfleet.plan.models import ImagePlan, ServingPlan

Issues = list[Finding]
_MAX_GPUS_PER_NODE = 8  # Topology.gpus_per_node's bound: an Instinct platform has 8


def check_fleet(resolved: Resolved) -> Issues:
    """One host per node, cluster addresses for multi-node, and a cloud fleet's size,
    region, trust and cost against the catalog (:func:`check_cloud`)."""
    spec = resolved.spec
    issues: Issues = check_cloud(resolved)
    nodes, hosts = spec.topology.nodes, spec.fleet.node_count
    if hosts != nodes:
        more = "more nodes than" if nodes > hosts else "fewer nodes than"
        issues.append(
            config_issue(
                "topology.nodes",
                f"{nodes} node(s) but the fleet has {hosts} host(s): the layout asks for "
                f"{more} the fleet provides",
                f"list one fleet host (or cloud instance) per node, {nodes} in all; or set "
                f"topology.nodes: {hosts} to match the fleet (with tp × pp × dp = {hosts} × "
                "gpus_per_node)",
            )
        )
    if spec.fleet.hosts and spec.topology.nodes > 1:
        missing = [h.name for h in spec.fleet.hosts if not h.cluster_address]
        if missing:
            issues.append(
                config_issue("fleet.hosts", f"hosts without an address: {', '.join(missing)}")
            )
    return issues


def check_cloud(resolved: Resolved) -> Issues:
    """A cloud fleet's size (known, in the region, the topology's GPUs), its host-key
    trust and team (Hot Aisle), and its price against the stack's cost ceilings. The SSH
    key is not checked: plans are made on machines that need not hold it."""
    spec = resolved.spec
    fleet, defaults = spec.fleet.cloud, resolved.cloud
    if fleet is None or defaults is None:
        return []
    issues = _cloud_team_and_trust(fleet, defaults)
    size = resolved.cloud_size
    if size is None:
        return [*issues, _unknown_size(fleet)]
    if fleet.region not in size.regions:
        issues.append(
            config_issue(
                "fleet.cloud.region",
                f"{fleet.provider} does not list size {size.slug} in region {fleet.region!r}",
                f"use a region that lists it: {', '.join(size.regions) or '(none today)'}",
            )
        )
    topo = spec.topology
    if size.accelerator != topo.accelerator or size.gpus != topo.gpus_per_node:
        issues.append(_size_mismatch(fleet, spec, size))
    return issues + _cost_issues(fleet, spec, size)


def _cloud_team_and_trust(fleet: CloudFleetSpec, defaults: CloudDefaults) -> Issues:
    issues: Issues = []
    if not defaults.user_data and not fleet.trust_first_use:
        issues.append(
            config_issue(
                "fleet.cloud.trust_first_use",
                f"{defaults.title} takes no user-data, so amdfleet cannot inject the "
                "instance's SSH host key and pin it before the first connection",
                "set trust_first_use: true to accept the key the instance shows on its "
                "first connection and pin it from then on (a machine in the middle at that "
                "moment would go unnoticed); or use a cloud that takes user-data",
            )
        )
    if fleet.provider == "hotaisle" and not fleet.team:
        issues.append(
            config_issue(
                "fleet.cloud.team",
                "Hot Aisle rents VMs to a team, and no team is given",
                "set team: to your Hot Aisle team handle (the API's GET /user/ lists your teams)",
            )
        )
    if fleet.provider != "hotaisle" and fleet.team:
        issues.append(
            config_issue(
                "fleet.cloud.team",
                f"team {fleet.team!r} is a Hot Aisle setting; {defaults.title} has no teams "
                "in its API",
                "remove team: (the API token decides the account)",
            )
        )
    return issues


def _unknown_size(fleet: CloudFleetSpec) -> Finding:
    sizes = cloud_sizes(fleet.provider)
    return config_issue(
        "fleet.cloud.plan",
        f"{fleet.plan!r} is not a {cloud(fleet.provider).title} size amdfleet knows",
        f"use one of: {'; '.join(_describe(s) for s in sizes)}",
    )


def _size_mismatch(fleet: CloudFleetSpec, spec: StackSpec, size: CloudSize) -> Finding:
    topo = spec.topology
    matching = [
        s
        for s in cloud_sizes(fleet.provider)
        if s.accelerator == topo.accelerator and s.gpus == topo.gpus_per_node
    ]
    wanted = f"{topo.gpus_per_node}x {topo.accelerator}"
    hint = (
        f"use a size with {wanted}: {'; '.join(_describe(s) for s in matching)}"
        if matching
        else f"{cloud(fleet.provider).title} has no {wanted} size in the catalog; change "
        f"topology.accelerator/gpus_per_node to {size.accelerator} × {size.gpus} to use "
        f"{size.slug}"
    )
    return config_issue(
        "fleet.cloud.plan",
        f"size {size.slug} has {size.gpus}x {size.accelerator} but the topology asks for "
        f"{wanted} per node",
        hint,
    )


def _cost_issues(fleet: CloudFleetSpec, spec: StackSpec, size: CloudSize) -> Issues:
    hourly = size.price_hourly_usd * fleet.count
    ttl = spec.campaign.ttl_hours
    longest = math.floor(fleet.max_total_usd / hourly * 10) / 10 if fleet.max_total_usd else 0
    issues: Issues = []
    if fleet.max_hourly_usd is not None and hourly > fleet.max_hourly_usd:
        issues.append(
            config_issue(
                "fleet.cloud.max_hourly_usd",
                f"the fleet costs ${hourly:,.2f}/h ({fleet.count} × {size.slug} at "
                f"${size.price_hourly_usd:,.2f}/h), above max_hourly_usd "
                f"${fleet.max_hourly_usd:,.2f}",
                f"raise max_hourly_usd to at least {hourly:.2f}, or pick a smaller size or "
                "fewer instances",
            )
        )
    if fleet.max_total_usd is None:
        return issues
    if ttl is None:
        issues.append(
            config_issue(
                "fleet.cloud.max_total_usd",
                f"max_total_usd ${fleet.max_total_usd:,.2f} bounds the campaign's cost, but "
                "campaign.ttl_hours is not set, so the fleet runs (and bills) without end",
                f"set campaign.ttl_hours (at ${hourly:,.2f}/h, at most "
                f"{longest:g} h fits), or remove max_total_usd",
            )
        )
    elif hourly * ttl > fleet.max_total_usd:
        issues.append(
            config_issue(
                "fleet.cloud.max_total_usd",
                f"the campaign costs ${hourly * ttl:,.2f} (${hourly:,.2f}/h × {ttl:g} h), "
                f"above max_total_usd ${fleet.max_total_usd:,.2f}",
                f"lower campaign.ttl_hours to at most {longest:g}, or "
                f"raise max_total_usd to at least {hourly * ttl:.2f}",
            )
        )
    return issues


def _describe(size: CloudSize) -> str:
    return (
        f"{size.slug} ({size.gpus}x {size.accelerator}, ${size.price_hourly_usd:,.2f}/h, "
        f"{', '.join(size.regions) or 'no region'})"
    )


def check_ports(spec: StackSpec) -> Issues:
    """The API port against the rendezvous ports and the hosts' SSH ports."""
    port = spec.serving.port
    par = spec.parallelism
    taken = {par.master_port: "parallelism.master_port (the rendezvous on the head)"}
    if par.backend == "ray":
        taken[par.ray_port] = "parallelism.ray_port (the Ray GCS on the head)"
    for host in spec.fleet.hosts:
        if host.connection == "ssh":
            taken.setdefault(host.port, f"host '{host.name}''s SSH port")
    taken.setdefault(22, "SSH's port")
    if port not in taken:
        return []
    return [
        config_issue(
            "serving.port",
            f"the API port {port} is also {taken[port]}: the second listener fails to bind",
            "pick another serving.port (8000 is the engines' default)",
        )
    ]


def check_benchmark(spec: StackSpec) -> tuple[Issues, list[str]]:
    """An enabled verification gate must measure serving performance, or say it won't."""
    verification = spec.verification
    if not verification.enabled or verification.scenarios or verification.allow_no_benchmark:
        return [], []
    if "verification" not in spec.model_fields_set:
        return [
            config_issue(
                "verification",
                "the stack has no verification section: the readiness gate would run no "
                "benchmark and mark the endpoint ready having measured nothing",
                "add verification.scenarios (e.g. '- {name: c8, input_len: 1024, "
                "output_len: 128, max_concurrency: 8}'), or set verification.enabled: false "
                "(the stack is then never marked ready)",
            )
        ], []
    measures = "checks accuracy only" if verification.accuracy else "measures nothing"
    return [
        config_issue(
            "verification.scenarios",
            f"verification is enabled but lists no benchmark scenario: the gate {measures} "
            "and would mark the endpoint ready without a serving benchmark",
            "add a scenario (e.g. '- {name: c8, input_len: 1024, output_len: 128, "
            "max_concurrency: 8}'), set verification.allow_no_benchmark: true to run "
            "without one, or verification.enabled: false",
        )
    ], []


def check_parallelism(spec: StackSpec, arch: ModelArchitecture) -> tuple[Issues, list[str]]:
    """tp × pp × dp against the GPUs, and tp and pp against the model's shape."""
    par, topo = spec.parallelism, spec.topology
    issues: Issues = []
    warnings: list[str] = []
    gpus = topo.nodes * topo.gpus_per_node
    if par.tp * par.pp * par.dp != gpus:
        issues.append(_gpu_count_issue(spec))
    if arch.heads % par.tp:
        issues.append(
            config_issue(
                "parallelism.tp",
                f"{par.tp} does not divide the model's {arch.heads} attention heads",
                f"use a divisor of {arch.heads}: {_divisors(arch.heads, limit=16)}",
            )
        )
    kv_ok = arch.kv_heads % par.tp == 0 if par.tp <= arch.kv_heads else par.tp % arch.kv_heads == 0
    if not kv_ok:
        issues.append(
            config_issue(
                "parallelism.tp",
                f"{par.tp} and the model's {arch.kv_heads} KV heads do not split evenly",
                "use a tp that divides the KV heads or is a multiple of them",
            )
        )
    if par.pp > arch.layers:
        issues.append(
            config_issue(
                "parallelism.pp",
                f"{par.pp} pipeline stages for a model with {arch.layers} layers",
                f"use pp <= {arch.layers}",
            )
        )
    if topo.nodes > 1 and par.dp > 1:
        issues.append(
            config_issue(
                "parallelism.dp",
                f"data parallelism across nodes (dp={par.dp}, nodes={topo.nodes}) is not supported",
                "run one stack per node with dp on each, or use dp: 1 with tp × pp",
            )
        )
    if topo.nodes > 1 and par.tp > topo.gpus_per_node:
        warnings.append(
            f"tensor parallelism ({par.tp}) spans nodes: without InfiniBand-class links, "
            f"pp={topo.nodes} × tp={topo.gpus_per_node} is much faster (seed 004)"
        )
    return issues, warnings


def check_engine(resolved: Resolved) -> Issues:
    """What the engine supports: nodes, layouts, CPU, backend, networking."""
    spec, acc, engine = resolved.spec, resolved.accelerator, resolved.engine
    issues: Issues = []
    if spec.topology.nodes > 1 and not engine.multi_node:
        multi = [name for name, other in engines.REGISTRY.items() if other.multi_node]
        issues.append(
            config_issue(
                "engine.name",
                f"{engine.name} runs on a single node only, but topology.nodes is "
                f"{spec.topology.nodes}",
                f"use {' or '.join(multi)} for multi-node serving, or one node",
            )
        )
    used = [kind for kind in ("pp", "dp") if getattr(spec.parallelism, kind) > 1]
    unsupported = [kind for kind in used if kind not in engine.parallelism]
    if unsupported:
        issues.append(
            config_issue(
                "parallelism",
                f"{engine.name} parallelises with {' and '.join(engine.parallelism)} only, not "
                f"{' or '.join(unsupported)}",
                " and ".join(f"set {kind}: 1" for kind in unsupported),
            )
        )
    issues += engine.layout_issues(spec.topology.nodes, spec.parallelism.pp)
    issues += _adopt_issues(spec)
    issues += _cpu_pipeline_eager(spec, acc)
    if acc.arch == "cpu" and not engine.cpu:
        cpu = [name for name, other in engines.REGISTRY.items() if other.cpu]
        issues.append(
            config_issue(
                "engine.name", f"{engine.name} has no CPU backend", f"use {' or '.join(cpu)}"
            )
        )
    if spec.parallelism.backend not in engine.backends:
        issues.append(
            config_issue(
                "parallelism.backend",
                f"the {spec.parallelism.backend} backend is not a {engine.name} option",
                f"use backend: {' or '.join(engine.backends)}",
            )
        )
    if spec.topology.nodes > 1 and spec.engine.network != "host":
        issues.append(
            config_issue(
                "engine.network",
                "multi-node engines need host networking (RCCL and Gloo connect between "
                "nodes on many ports)",
                "set engine.network: host",
            )
        )
    return issues


def _adopt_issues(spec: StackSpec) -> Issues:
    """``engine.adopt`` names a host of the fleet, on a one-node stack that runs the
    engine as a process (what a hand-started engine is)."""
    if spec.engine.adopt is None:
        return []
    host = spec.engine.adopt.rsplit(":", 1)[0]
    names = [h.name for h in spec.fleet.hosts or ()]
    issues: Issues = []
    if host not in names:
        issues.append(
            config_issue(
                "engine.adopt",
                f"{spec.engine.adopt!r} names host {host!r}, which is not in fleet.hosts",
                f"use <host>:<port> with one of: {', '.join(names) or 'no hosts listed'}",
            )
        )
    if spec.topology.nodes > 1 or spec.engine.runtime != "process":
        issues.append(
            config_issue(
                "engine.adopt",
                "only a one-node engine run as a process can be adopted (topology.nodes: "
                f"{spec.topology.nodes}, engine.runtime: {spec.engine.runtime})",
                "remove engine.adopt, or set topology.nodes: 1 and engine.runtime: process",
            )
        )
    return issues


def check_verification(spec: StackSpec, serving: ServingPlan) -> tuple[Issues, list[str]]:
    """Scenarios that fit the context, known baselines, concurrency within max_num_seqs."""
    issues: Issues = []
    warnings: list[str] = []
    for i, scenario in enumerate(spec.verification.scenarios):
        longest = math.ceil(scenario.input_len * (1 + scenario.range_ratio)) + math.ceil(
            scenario.output_len * (1 + scenario.range_ratio)
        )
        if scenario.dataset == "random" and longest > serving.max_model_len:
            issues.append(
                config_issue(
                    f"verification.scenarios[{i}]",
                    f"'{scenario.name}' needs up to {longest} tokens per request but "
                    f"serving.max_model_len is {serving.max_model_len}",
                    "shorten input_len/output_len or raise serving.max_model_len",
                )
            )
        limit = serving.max_num_seqs
        if limit and scenario.max_concurrency and scenario.max_concurrency > limit:
            warnings.append(
                f"scenario '{scenario.name}' sends {scenario.max_concurrency} concurrent "
                f"requests but serving.max_num_seqs is {limit}: the excess queues "
                "(seed 002 recommends matching them)"
            )
    for i, scenario in enumerate(spec.verification.scenarios):
        if scenario.baseline and scenario.baseline not in catalog.BASELINES:
            issues.append(
                config_issue(
                    f"verification.scenarios[{i}].baseline",
                    f"unknown baseline {scenario.baseline!r}",
                    f"use one of {', '.join(catalog.BASELINES)}",
                )
            )
    if spec.verification.baseline and spec.verification.baseline not in catalog.BASELINES:
        issues.append(
            config_issue(
                "verification.baseline",
                f"unknown baseline {spec.verification.baseline!r}",
                f"use one of {', '.join(catalog.BASELINES)}",
            )
        )
    return issues, warnings


def layout_warnings(resolved: Resolved, image: ImagePlan) -> list[str]:
    """Layouts that work but are unverified, open or not reproducible."""
    spec, acc = resolved.spec, resolved.accelerator
    warnings: list[str] = []
    verified = catalog.verified_min_tp("sglang", acc.id, resolved.model.id, spec.model.precision)
    if verified and spec.parallelism.tp < verified:
        warnings.append(
            f"tp={spec.parallelism.tp} is below the smallest TP the SGLang cookbook "
            f"verified for this model on {acc.id} (tp={verified}, seed 003)"
        )
    warnings += [
        f"{issue.subject}: {issue.detail}; `amdfleet plan` and `pulumi preview` accept it, "
        f"`pulumi up` refuses it — {issue.hint}"
        for issue in [
            *placeholder_host_keys(spec.fleet.hosts),
            *placeholder_build_host_key(_separate_build_host(spec)),
        ]
    ]
    if spec.serving.api_key_secret is None:
        warnings.append("serving.api_key_secret is null: the endpoint accepts any client")
    if image.pin:
        warnings.append(
            f"{image.image} is a tag: `pulumi up` resolves it to a digest once and every "
            "node runs that digest until engine.image changes (a later push under the tag "
            "does not move the stack)"
        )
    moving = catalog.moving_tag(image.image) if image.pin and image.image else None
    if moving is not None:
        warnings.append(
            f"engine.image {image.image!r} is a moving tag ({moving}): the stack does not say "
            "which engine release it runs — name a release tag (the catalog pins one per "
            "engine and arch) or a digest"
        )
    for name, ref, commit in (
        ("vLLM", image.vllm_ref, image.vllm_commit),
        ("AITER", image.aiter_ref, image.aiter_commit),
    ):
        if image.build and ref is not None and ref == commit and not COMMIT_RE.match(ref):
            warnings.append(
                f"the catalog has not recorded the commit of {name} {ref}: the build checks "
                "out the release tag — run scripts/resolve-source-pins on a machine that "
                "reaches GitHub to pin it, or give image_build's ref as a 40-hex commit"
            )
    if image.build and image.registry is None and spec.topology.nodes > 1:
        warnings.append(
            f"image_build has no registry: each of the {spec.topology.nodes} nodes builds "
            f"the image itself (about {image.build_hours:g} h each) and the nodes may end up "
            "with different engines — set image_build.registry to build once and pull one "
            "digest everywhere"
        )
    elif image.build and image.registry is None:
        warnings.append(
            "image_build has no registry: the node builds the image itself, and another "
            "stack or a replaced node builds it again — set image_build.registry to build "
            "once and pull by digest"
        )
    if spec.image_build.registry is not None and not image.build:
        warnings.append("image_build.registry is set but image_build.enabled is false: unused")
    return warnings


def _gpu_count_issue(spec: StackSpec) -> Finding:
    """tp × pp × dp against nodes × gpus_per_node, with the fix in each direction."""
    par, topo = spec.parallelism, spec.topology
    needed, gpus = par.tp * par.pp * par.dp, topo.nodes * topo.gpus_per_node
    message = (
        f"tp × pp × dp = {par.tp} × {par.pp} × {par.dp} = {needed}, but the topology has "
        f"nodes × gpus_per_node = {topo.nodes} × {topo.gpus_per_node} = {gpus} GPUs"
    )
    fit = f"make tp × pp × dp = {gpus} to use the GPUs the topology has"
    if needed < gpus:
        return config_issue(
            "parallelism",
            f"{message}: {gpus - needed} would sit idle",
            f"{fit}, or shrink the topology to {needed} GPUs (nodes × gpus_per_node)",
        )
    nodes, per_node = _smallest_topology(needed)
    grow = f"set topology.nodes: {nodes}"
    if per_node != topo.gpus_per_node:
        grow += f" and gpus_per_node: {per_node}"
    grow += f", and list {nodes} fleet hosts (the fleet has {spec.fleet.node_count})"
    return config_issue(
        "parallelism",
        f"{message}: the layout needs {needed - gpus} GPU(s) more than the fleet has",
        f"{grow}; or {fit}",
    )


def _smallest_topology(gpus: int) -> tuple[int, int]:
    """The fewest nodes (and GPUs on each) that hold exactly ``gpus`` GPUs."""
    first = math.ceil(gpus / _MAX_GPUS_PER_NODE)
    nodes = next(n for n in range(first, gpus + 1) if gpus % n == 0)
    return nodes, gpus // nodes


def _divisors(n: int, limit: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, limit) + 1) if n % d == 0)


def _separate_build_host(spec: StackSpec) -> HostSpec | None:
    """The stack's build host when it is not one of the fleet's hosts."""
    build_host = spec.image_build.build_host
    return build_host if isinstance(build_host, HostSpec) and spec.image_build.enabled else None


def _cpu_pipeline_eager(spec: StackSpec, acc: Accelerator) -> Issues:
    """vLLM 0.32's CPU build serves pipeline parallel only compiled: in eager mode its
    first request kills the engine (measured 2026-12-07, two stages, one host: the last
    stage's worker fails ``assert self.intermediate_tensors is not None`` in
    ``sync_and_gather_intermediate_tensors``, vllm/v1/worker/gpu_model_runner.py:3174)."""
    if acc.arch != "cpu" or spec.engine.name != "vllm" or spec.parallelism.pp < 2:
        return []
    args = spec.engine.extra_args
    index = next((i for i, a in enumerate(args) if a.split("=", 1)[0] == "--enforce-eager"), None)
    if index is None:
        return []
    return [
        config_issue(
            f"engine.extra_args[{index}]",
            f"--enforce-eager with pipeline parallel ({spec.parallelism.pp} stages) on vLLM's CPU "
            "build: its first request kills the engine (an assertion on the stages' "
            "intermediate tensors, gpu_model_runner.py:3174 at 0.32.0)",
            "leave --enforce-eager out of a pipeline-parallel CPU stack",
        )
    ]
