"""Renderers: a deployment plan to launch scripts, env files, units and Dockerfiles.

One jinja2 environment with ``StrictUndefined`` (a missing value is an error, never an
empty string), ``keep_trailing_newline`` and shell-quoting filters. Templates live in
the top-level ``templates/`` directory. Output is deterministic: the same plan renders
byte-identical files, and each file carries the SHA-256 of its own body in a header
line, so a changed template shows up as a changed input in ``pulumi preview``.

Secrets are never rendered. Scripts read them at run time from ``secrets.env``, which
only the deployment provider writes on the host (mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from amdfleet import engines
from amdfleet.addresses import host_port
from amdfleet.engines.base import API_KEY_CONFIG, HEAD_PLACEHOLDER, KEY_SHIM_DIR
from amdfleet.errors import RenderError
from amdfleet.plan import DeploymentPlan, NodePlan
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.supervision import (
    DEFAULT_RESTART,
    UNREQUESTED_EXIT_STATUS,
    WATCHDOG_KILL_AFTER_S,
    WATCHDOG_SIGNAL,
    docker_restart_flag,
)
from amdfleet.shellwords import shell_join, shell_lines, shell_quote
from amdfleet.templates import DOCKERFILE_TEMPLATE, TEMPLATES_DIR

if TYPE_CHECKING:
    import jinja2

HASH_MARK = "amdfleet-content-hash: sha256:"
_HASH_LINE = re.compile(rf"^(#\s*){re.escape(HASH_MARK)}[0-9a-f]{{64}}\n", re.MULTILINE)


@dataclass(frozen=True)
class RenderedFile:
    """One rendered file: its path relative to the output dir, content and mode."""

    path: str
    content: str
    mode: int

    @property
    def sha256(self) -> str:
        """The content hash recorded in the file's header line."""
        return file_body_hash(self.content)


def render_plan(plan: DeploymentPlan) -> list[RenderedFile]:
    """Every file for ``plan``: per-node launch files, the Dockerfile if the image is
    built, and a manifest listing each file's hash. Sorted by path."""
    files = [f for node in plan.nodes for f in render_node(plan, node.rank)]
    if plan.image.build:
        files.append(render_dockerfile(plan))
    files.append(_plan_json(plan))
    files.append(_manifest(plan, files))
    return sorted(files, key=lambda f: f.path)


def render_node(plan: DeploymentPlan, rank: int, image: str | None = None) -> list[RenderedFile]:
    """The launch script, env file and (process runtime) systemd unit for the node with
    ``rank``, running container ``image`` (docker runtime; default: the plan's image,
    else e.g. the digest reference a pin resolved).

    Paths are prefixed with ``node<rank>-<host>/``; on the host they live in
    ``node.remote_dir``. The docker runtime has no unit: dockerd's restart policy
    supervises its container (:mod:`amdfleet.remote.supervision`).
    """
    node = plan.nodes[rank]
    prefix = f"node{rank}-{node.name}/"
    context = {**_node_context(plan, node), "image": image or plan.image.image}
    files = [
        _file(prefix + "launch.sh", "launch.sh.j2", context, 0o755),
        _file(prefix + "engine.env", "engine.env.j2", context, 0o644),
    ]
    if plan.engine.runtime != "docker":
        unit = f"{plan.engine.container_name}.service"
        files.append(_file(prefix + unit, "engine.service.j2", context, 0o644))
    return files


def render_dockerfile(plan: DeploymentPlan) -> RenderedFile:
    """The AITER + vLLM Dockerfile for the plan's gfx targets."""
    image = plan.image
    if not image.build or image.base_image is None:
        raise RenderError(f"stack {plan.stack} does not build an image")
    name = "image/Dockerfile." + "-".join(image.gfx_targets)
    content = dockerfile_text(
        image.base_image, str(image.aiter_commit), str(image.vllm_commit), image.gfx_targets
    )
    return RenderedFile(name, content, 0o644)


def dockerfile_text(
    base_image: str, aiter_commit: str, vllm_commit: str, gfx_targets: Sequence[str]
) -> str:
    """The rendered AITER + vLLM Dockerfile, checking out the pinned commits. It names no
    stack, tag or ref name, so it is the same for every stack that asks for the same build
    (see :func:`amdfleet.templates.dockerfile_template`)."""
    context = {
        "base_image": base_image,
        "aiter_commit": aiter_commit,
        "vllm_commit": vllm_commit,
        "gfx_targets": ";".join(gfx_targets),
    }
    return _file("Dockerfile", DOCKERFILE_TEMPLATE, context, 0o644).content


def write_files(files: Iterable[RenderedFile], out_dir: Path) -> list[Path]:
    """Write rendered files under ``out_dir`` with their modes; returns the paths."""
    written = []
    for rendered in files:
        target = out_dir / rendered.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered.content)
        target.chmod(rendered.mode)
        written.append(target)
    return written


def file_body_hash(content: str) -> str:
    """SHA-256 of a rendered file's body (the file minus its hash header line)."""
    return hashlib.sha256(_HASH_LINE.sub("", content, count=1).encode()).hexdigest()


# --- helpers -----------------------------------------------------------------------------


@cache
def _environment() -> jinja2.Environment:
    # Built on first use: importing this module (for RenderedFile or file_body_hash) should
    # not pay for importing jinja2.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["sh"] = shell_quote
    env.filters["shjoin"] = shell_join
    env.filters["shlines"] = shell_lines
    return env


def _file(path: str, template: str, context: Mapping[str, object], mode: int) -> RenderedFile:
    import jinja2

    try:
        body = _environment().get_template(template).render(**context)
    except jinja2.TemplateError as e:
        raise RenderError(f"rendering {template} for {path} failed: {e}") from e
    return RenderedFile(path, _with_hash(body), mode)


def _with_hash(body: str) -> str:
    digest = hashlib.sha256(body.encode()).hexdigest()
    line = f"# {HASH_MARK}{digest}\n"
    if body.startswith("#!"):
        first, _, rest = body.partition("\n")
        return f"{first}\n{line}{rest}"
    return line + body


def _node_context(plan: DeploymentPlan, node: NodePlan) -> dict[str, object]:
    head = plan.head.cluster_address or HEAD_PLACEHOLDER
    argv = list(node.argv)
    key_config = node.api_key_file
    engine = engines.engine(plan.engine.name)
    key_shim = engine.key_shim if node.secret_env else None
    layout = EngineLayout(node.remote_dir)
    return {
        "plan": plan,
        "node": node,
        "stack": plan.stack,
        "nodes": len(plan.nodes),
        "executable": argv[0],
        "args": argv[1:],
        "argv": argv,
        "ray_argv": list(node.ray_argv),
        "ray_head_address": head,
        "ray_port": plan.parallelism.ray_port,
        "ray_head": host_port(head, plan.parallelism.ray_port),
        "ray_python": plan.engine.python,
        "ray_gpus": _ray_gpus(plan),
        "env": node.env,
        "secret_names": sorted(node.secret_env),
        "container": plan.engine.container_name,
        "remote_dir": node.remote_dir,
        "served_mark": layout.served,  # the completion watchdog's files (systemd unit)
        "watchdog_script": layout.watchdog_script,
        "mounts": _mounts(plan, key_config, key_shim),
        "key_shim": key_shim,
        "key_shim_env": engine.key_shim_env,
        "key_shim_dir": KEY_SHIM_DIR,
        "key_config": key_config,
        "key_config_file": API_KEY_CONFIG,
        "ready_path": plan.engine.readiness.paths[0],
        "restart": DEFAULT_RESTART,
        "restart_flag": docker_restart_flag(DEFAULT_RESTART),
        "secrets_mount": CONTAINER_SECRETS,
        "secrets_loader": SECRETS_LOADER,
    }


def _ray_gpus(plan: DeploymentPlan) -> int:
    """The GPUs the Ray cluster must hold before the head serves (none on CPU)."""
    return 0 if plan.accelerator.is_cpu else sum(n.gpus for n in plan.nodes)


CONTAINER_SECRETS = "/run/amdfleet/secrets.env"
"""Where a container sees the node's secrets.env (read-only)."""
CONTAINER_SHIMS = "/run/amdfleet/bin"
"""Where a container sees the engine's key shim directory (read-only), first on PATH."""
SECRETS_LOADER = (
    f'if [ -d {CONTAINER_SHIMS} ]; then PATH="{CONTAINER_SHIMS}:$PATH"; export PATH; fi; '
    f"if [ -f {CONTAINER_SECRETS} ]; then "
    'while IFS= read -r l || [ -n "$l" ]; do '
    'case "$l" in ""|"#"*) continue;; esac; '
    'export "${l%%=*}=${l#*=}"; '
    f"done <{CONTAINER_SECRETS}; fi; "
    "_af_stop=; _af_int=; _af_sent=; _af_c=; _af_dog=; _af_k=; "
    # The stop goes to the engine once it is known (a signal can come before $! is).
    '_af_fwd() { if [ -n "$_af_c" ] && [ -z "$_af_sent" ]; then _af_sent=1; '
    'kill -TERM "$_af_c" 2>/dev/null; fi; }; '
    "trap '_af_stop=1; _af_int=1; _af_fwd' TERM INT; "
    # The host's watchdog: SIGTERM to the engine, SIGKILL if it is still there later.
    f'trap \'_af_dog=1; _af_int=1; _af_fwd; [ -n "$_af_k" ] || {{ '
    f'{{ sleep {WATCHDOG_KILL_AFTER_S}; kill -KILL "$_af_c"; }} '
    ">/dev/null 2>&1 </dev/null & _af_k=$!; }' "
    f"{WATCHDOG_SIGNAL}; "
    '"$@" & _af_c=$!; '
    # wait returns early when a trapped signal arrives: then wait again for the status.
    'while :; do [ -n "$_af_stop$_af_dog" ] && _af_fwd; _af_int=; wait "$_af_c"; _af_rc=$?; '
    '[ -n "$_af_int" ] || break; done; '
    '[ -n "$_af_k" ] && kill "$_af_k" 2>/dev/null; '
    '[ -n "$_af_stop" ] && exit "$_af_rc"; '
    'if [ -n "$_af_dog" ]; then '
    'echo "amdfleet-entrypoint: the watchdog on the host stopped the engine (it exited '
    f'with status $_af_rc); exiting {UNREQUESTED_EXIT_STATUS} so that dockerd restarts it" >&2; '
    f"exit {UNREQUESTED_EXIT_STATUS}; fi; "
    'if [ "$_af_rc" -eq 0 ]; then '
    'echo "amdfleet-entrypoint: engine exited with status 0 without being asked to stop; '
    f'exiting {UNREQUESTED_EXIT_STATUS} so that dockerd restarts it" >&2; '
    f"exit {UNREQUESTED_EXIT_STATUS}; fi; "
    '_af_why="status $_af_rc"; [ "$_af_rc" -gt 128 ] && '
    '_af_why="status $_af_rc (signal $((_af_rc-128)))"; '
    'echo "amdfleet-entrypoint: engine exited with $_af_why" >&2; exit "$_af_rc"'
)
"""POSIX sh run as a container's entrypoint (PID 1): export secrets.env's lines literally
(no shell evaluation, as ``docker --env-file`` reads them), put the key shim directory
first on PATH when there is one, then run the engine command that follows as its child.
The key is then in the engine's process environment only, not in the container's
configuration.

It supervises that child for dockerd's restart policy (``on-failure:N``, which restarts
non-zero exits only): ``docker stop``'s SIGTERM (or SIGINT) is passed on to the engine
and the engine's status returned (dockerd does not restart a container it was asked to
stop); an engine that ends without being asked is logged with its status and, when that
status is 0, the container exits with
:data:`~amdfleet.remote.supervision.UNREQUESTED_EXIT_STATUS` instead, so every
unrequested stop is restarted, at most N times. The host's watchdog sends
:data:`~amdfleet.remote.supervision.WATCHDOG_SIGNAL` (``docker kill --signal``): the
engine gets SIGTERM (SIGKILL after a grace period) and the container exits with that
status too, saying the watchdog stopped it (the watchdog's reason is in its own log on the
host)."""


def _mounts(plan: DeploymentPlan, key_config: str | None, key_shim: str | None) -> list[str]:
    mounts = [f"{plan.weights.cache_dir}:{plan.nodes[0].env['HF_HOME']}"]
    local = plan.weights.local_path or (plan.model.checkpoint if plan.model.is_local_path else None)
    if local:
        mounts.append(f"{local}:{local}:ro")
    if key_config:
        mounts.append(f"{key_config}:{key_config}:ro")
    if key_shim:
        mounts.append(f"{plan.head.remote_dir}/{KEY_SHIM_DIR}:{CONTAINER_SHIMS}:ro")
    return mounts


def _plan_json(plan: DeploymentPlan) -> RenderedFile:
    body = json.dumps(plan.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return RenderedFile("plan.json", body, 0o644)


def _manifest(plan: DeploymentPlan, files: list[RenderedFile]) -> RenderedFile:
    manifest = {
        "stack": plan.stack,
        "engine": plan.engine.name,
        "runtime": plan.engine.runtime,
        "image": plan.image.image,
        "endpoint": plan.endpoint,
        "files": {f.path: {"sha256": f.sha256, "mode": oct(f.mode)} for f in files},
    }
    return RenderedFile(
        "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n", 0o644
    )
