"""``amdfleet stacks``, ``amdfleet plan`` and ``amdfleet render``: a stack resolved into
what would run, without provisioning anything."""

from __future__ import annotations

import json
from pathlib import Path

import click

from amdfleet.addresses import host_port
from amdfleet.catalog.releases import COMMIT_RE
from amdfleet.config import LoadedStack, load_stack_file, stack_names
from amdfleet.plan import (
    CloudPlan,
    ClusterPlan,
    DeploymentPlan,
    ImagePlan,
    MemoryBudget,
    NodePlan,
    plan,
)
from amdfleet.plan.models import LifetimePlan
from amdfleet.shellwords import shell_join
from amdfleet.tables import table


@click.command("stacks")
def stacks_command() -> None:
    """List the stacks in stacks/ with what each runs."""
    rows = [(name, load_stack_file(name).spec.description) for name in stack_names()]
    click.echo(table((), rows))


@click.command("plan")
@click.argument("stack")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(stack: str, as_json: bool) -> None:
    """Validate STACK and print its resolved plan: hosts, ranks, per-GPU memory budget,
    image and command lines. Nothing is provisioned."""
    from amdfleet.verify.reference import checked_plan

    loaded = load_stack_file(stack)
    resolved = checked_plan(loaded.spec)
    if as_json:
        click.echo(json.dumps(resolved.model_dump(mode="json"), indent=2, sort_keys=True))
        return
    click.echo(format_plan(loaded, resolved))


@click.command("render")
@click.argument("stack")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the files into (created if missing).",
)
def render_command(stack: str, out_dir: Path) -> None:
    """Write every launch script, env file, systemd unit (process runtime) and Dockerfile of
    STACK into --out, with a manifest of content hashes. No secret is written."""
    from amdfleet.render import render_plan, write_files  # jinja2, only for this command

    loaded = load_stack_file(stack)
    files = render_plan(plan(loaded.spec))
    for path in write_files(files, out_dir):
        click.echo(str(path))


def format_plan(loaded: LoadedStack, resolved: DeploymentPlan) -> str:
    """A human-readable plan, as ``amdfleet plan`` prints it."""
    p, m, par = resolved, resolved.memory, resolved.parallelism
    summary = [
        ("stack", f"{p.stack}  ({loaded.source})"),
        ("", p.description),
        (
            "accelerator",
            f"{p.accelerator.name} ({p.accelerator.arch}) × {len(p.nodes)} node(s) × "
            f"{p.nodes[0].gpus} GPU(s)",
        ),
        (
            "model",
            f"{p.model.name}: {p.model.checkpoint} [{p.model.precision}"
            + (", quantized online from bf16" if p.model.online_quantization else "")
            + f"], served as {p.model.served_name}",
        ),
        (
            "engine",
            f"{p.engine.name} {p.engine.version} ({p.engine.runtime}); image "
            f"{p.image.image or '-'}" + _image_note(p.image),
        ),
        ("checked against", p.engine.manifest or "no manifest: checked at deploy time only"),
        (
            "parallelism",
            f"tp={par.tp} pp={par.pp} dp={par.dp}"
            + (f" backend={par.backend} master port {par.master_port}" if len(p.nodes) > 1 else ""),
        ),
        (
            "serving",
            f"{p.endpoint}  dtype={p.serving.dtype or 'checkpoint'} "
            f"max_model_len={p.serving.max_model_len} kv_cache={m.kv_dtype} "
            f"max_num_seqs={p.serving.max_num_seqs or 'engine default'}",
        ),
    ]
    memory = [
        ("usable", f"{m.usable_gib:.2f}", f"({m.gpu_memory_gib:g} × {m.utilization:g})"),
        ("weights", f"{m.weights_gib:.2f}", ""),
        ("overhead", f"{m.overhead_gib:.2f}", "(runtime, activations, sampler)"),
        (
            "KV cache",
            f"{m.kv_cache_gib:.2f}",
            f"= {m.kv_capacity_tokens:,} tokens ({m.kv_bytes_per_token:,} B/token); "
            f"needs {m.required_kv_tokens:,}",
        ),
    ]
    lines = [table((), summary)]
    if p.cloud is not None:
        lines += ["", "cloud", table((), _cloud_rows(p.cloud, p.accelerator.name), indent="  ")]
    if p.cluster is not None:
        lines += ["", "cluster", table((), _cluster_rows(p.cluster), indent="  ")]
    lines += [
        "",
        _memory_title(m),
        table((), memory + _stage_rows(m), align=("left", "right", "left"), indent="  "),
        "",
        "nodes",
    ]
    for node in p.nodes:
        where = node.address or "<pending>"
        if node.cluster_address and node.cluster_address != node.address:
            where += f" (cluster {node.cluster_address})"
        lines.append(f"  [{node.rank}] {node.name} {where} ({node.role}){_placement(node)}")
        for key, value in node.env.items():
            lines.append(f"      env {key}={value}")
        for key, secret in node.secret_env.items():
            lines.append(f"      env {key}=<secret {secret}>")
        if node.ray_argv:
            lines.append(f"      $ {shell_join(node.ray_argv)}")
        lines.append(f"      $ {shell_join(node.argv)}")
    lines += ["", "secrets"]
    for ref in loaded.secrets:
        state = (
            "set (encrypted)"
            if ref.present
            # namespaced: right in any project (a bare key is the project's own)
            else f"NOT SET: pulumi config set --secret amdfleet:{ref.key}  (prompts, or stdin)"
        )
        lines.append(f"  {ref.key}: {state}")
    lines.append(f"startup deadline {p.engine.startup_timeout_s} s")
    lines.append(_verification_line(p))
    lines.append(_campaign_line(p.campaign))
    if p.recipe_sources:
        lines += ["", "recipe", *(f"  {source}" for source in p.recipe_sources)]
        lines += [f"  left out: {item}" for item in p.recipe_dropped]
    if p.warnings:
        lines += ["", "warnings", *(f"  ! {w}" for w in p.warnings)]
    return "\n".join(lines)


OWN_IMAGE = "the cloud's own image"


def _image_note(image: ImagePlan) -> str:
    """How the image reaches the nodes, as the plan's engine line says it."""
    built = (
        f"vLLM {_pin(image.vllm_ref, image.vllm_commit)} + AITER "
        f"{_pin(image.aiter_ref, image.aiter_commit)} FROM {image.base_image}"
    )
    if image.build and image.registry:
        return (
            f" ({built}, built once on {image.build_host} for "
            f"{'/'.join(image.gfx_targets)}, pushed; every node pulls its digest)"
        )
    if image.build:
        return f" ({built}, built from source on every node for {'/'.join(image.gfx_targets)})"
    if image.pin:
        return " (pinned to its digest at the first up)"
    return ""


def _pin(ref: str | None, commit: str | None) -> str:
    """``v0.32.0 @ 0123456789ab``, or the tag alone while no commit is recorded."""
    if ref == commit and not COMMIT_RE.match(str(ref)):
        return f"{ref} (commit not recorded)"
    return f"{ref} @ {str(commit)[:12]}"


def _cloud_rows(cloud: CloudPlan, accelerator: str) -> list[tuple[str, str]]:
    """The instances a cloud fleet rents, and what they cost over the campaign."""
    key = (
        "trusted on first use (the cloud takes no user-data)"
        if cloud.trust_first_use
        else "generated by amdfleet, injected through user-data, pinned"
    )
    if cloud.campaign_usd is None:
        campaign = "no campaign.ttl_hours: cost unbounded — set one"
    else:
        campaign = (
            f"${cloud.campaign_usd:,.2f} over campaign.ttl_hours {cloud.ttl_hours:g} h "
            f"(${cloud.fleet_hourly_usd:,.2f}/h × {cloud.ttl_hours:g} h)"
        )
    ceilings = [
        f"max_hourly_usd ${cloud.max_hourly_usd:,.2f}" if cloud.max_hourly_usd else "",
        f"max_total_usd ${cloud.max_total_usd:,.2f}" if cloud.max_total_usd else "",
    ]
    return [
        (
            "provider",
            f"{cloud.title} ({cloud.api_url})" + (f", team {cloud.team}" if cloud.team else ""),
        ),
        ("region", cloud.region),
        ("size", f"{cloud.size}: {cloud.gpus} × {accelerator} per instance"),
        ("count", f"{cloud.count} instance(s)"),
        ("image", f"{cloud.image or OWN_IMAGE}, user {cloud.user}"),
        ("host key", key),
        ("boot deadline", f"{cloud.boot_timeout_s:g} s"),
        ("price", f"${cloud.price_hourly_usd:,.2f} per instance-hour"),
        ("fleet", f"${cloud.fleet_hourly_usd:,.2f} per hour"),
        ("campaign", campaign),
        ("ceilings", ", ".join(c for c in ceilings if c) or "none set"),
        ("price source", cloud.size_source),
    ]


def _cluster_rows(cluster: ClusterPlan) -> list[tuple[str, str]]:
    """The head, the ports the other nodes reach on it, and what the API port serves."""
    head = cluster.head_address
    workers = (
        f"workers answer {', '.join(cluster.worker_http_paths)} only"
        if cluster.worker_http_paths
        else "workers serve no HTTP"
    )
    rows = [
        ("head", f"{head} ({cluster.head_name}, rank 0)"),
        ("API port", f"{cluster.api_port}: the OpenAI API on the head only; {workers}"),
    ]
    rows += [(purpose, host_port(head, port)) for purpose, port in cluster.head_ports.items()]
    rows.append(
        (
            "collective traffic",
            "on the interface holding each node's cluster address, read from its facts at "
            "deploy (GLOO/NCCL_SOCKET_IFNAME in cluster.env); the cluster check first tests "
            "the ports above from every node",
        )
    )
    return rows


def _memory_title(budget: MemoryBudget) -> str:
    if not budget.stages:
        return "memory per GPU (GiB)"
    return (
        f"memory per GPU (GiB), pipeline stage {budget.stage} of {len(budget.stages)} "
        f"(the tightest; up to {budget.stages[0].layers} layers per stage)"
    )


def _stage_rows(budget: MemoryBudget) -> list[tuple[str, str, str]]:
    """One row per pipeline stage, when the stages' budgets differ."""
    if len({(s.weights_gib, s.kv_capacity_tokens) for s in budget.stages}) < 2:
        return []
    return [
        (
            f"stage {s.stage}",
            f"{s.weights_gib:.2f}",
            f"weights; KV cache {s.kv_cache_gib:.2f} = {s.kv_capacity_tokens:,} tokens",
        )
        for s in budget.stages
    ]


def _placement(node: NodePlan) -> str:
    if not node.pipeline_stages:
        return ""
    stages = ", ".join(map(str, node.pipeline_stages))
    first, last = node.tp_ranks[0], node.tp_ranks[-1]
    tp = f"tp rank {first}" if first == last else f"tp ranks {first}-{last}"
    return f" stage{'s' if len(node.pipeline_stages) > 1 else ''} {stages}, {tp}"


def _campaign_line(campaign: LifetimePlan) -> str:
    ttl = campaign.ttl_hours
    lifetime = f"{ttl:g} h from `pulumi up`" if ttl else "no time limit"
    weights = "kept" if campaign.keep_weights else "removed"
    owner = f", owner {campaign.owner}" if campaign.owner else ""
    return (
        f"campaign {lifetime}, on expiry: {campaign.on_expiry}; weights {weights} on destroy{owner}"
    )


COMMANDS: list[click.Command] = [stacks_command, plan_command, render_command]


def _verification_line(p: DeploymentPlan) -> str:
    """Which gates the verification has: parity (reference, dtype), benchmarks, accuracy."""
    spec = p.verification.input
    if not spec.enabled:
        return "verification disabled: the stack is ready once the engine serves"
    gates = []
    if spec.parity is not None:
        gates.append(
            f"output parity vs {spec.parity.reference} ({spec.parity.dtype}, first "
            f"{spec.parity.tokens} tokens, >= {spec.parity.min_match:g} of prompts)"
        )
    else:
        gates.append("no output parity (no reference: `amdfleet parity record`)")
    gates.append(f"{len(spec.scenarios)} benchmark scenario(s)")
    if spec.accuracy is not None:
        gated = (
            spec.thresholds.min_flexible_accuracy is not None
            or spec.thresholds.min_strict_accuracy is not None
        )
        gates.append(f"{spec.accuracy.task} {'gate' if gated else 'smoke test (no threshold)'}")
    return "verification " + "; ".join(gates)
