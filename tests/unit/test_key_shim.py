"""TGI's API key reaches its router through the environment, never a command line.

TGI 3.3.6's launcher logs its arguments, key included, and starts ``text-generation-
router`` (found on PATH, with the launcher's own environment) with ``--api-key KEY`` on
the router's command line (launcher/src/main.rs:1942-1946,1971 and :2075 at commit
efb94e0d3db6). amdfleet therefore gives the launcher no key and puts a shim named like
the router first on PATH, which execs the real router with ``API_KEY`` (which the router
reads itself) in its environment.

The rendered process-runtime launch script runs here for real with bash. The launcher and
the router are stand-ins (TGI is Rust and serves only on GPUs): the launcher does with its
key exactly what the cited lines do, and the router records its argv and environment.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from amdfleet.config import parse_stack
from amdfleet.plan import plan
from amdfleet.render import CONTAINER_SHIMS, SECRETS_LOADER, render_node
from tests.unit.rendered import container_command, exec_argv, node_file, render_stack
from tests.unit.test_image_plan import _sections

KEY = "k-tgi-4f1d2a9c"

LAUNCHER = """#!/bin/sh
# As TGI 3.3.6's launcher: a key from API_KEY goes onto the router's command line; the
# router is found on PATH and inherits this environment.
echo "API_KEY=${API_KEY:-<none>}" >"$RECORD_DIR/launcher-env"
echo "PATH=$PATH" >>"$RECORD_DIR/launcher-env"
if [ -n "${API_KEY:-}" ]; then
  exec text-generation-router --port 18090 --api-key "$API_KEY"
fi
exec text-generation-router --port 18090
"""

ROUTER = """#!/bin/sh
printf '%s\\n' "$@" >"$RECORD_DIR/router-argv"
echo "API_KEY=${API_KEY:-<none>}" >"$RECORD_DIR/router-env"
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _tgi_process_stack(launcher: Path) -> Any:
    sections = _sections("mi300x-llama405b-tgi")
    sections["engine"] = {**sections["engine"], "runtime": "process", "executable": str(launcher)}
    return plan(parse_stack("tgi-process", sections))


def test_the_router_gets_the_key_in_its_environment_and_the_launcher_none(tmp_path: Path) -> None:
    launcher = _script(tmp_path / "tgi" / "text-generation-launcher", LAUNCHER)
    _script(tmp_path / "tgi" / "text-generation-router", ROUTER)
    deployment = _tgi_process_stack(launcher)
    assert deployment.head.secret_env == {"AMDFLEET_API_KEY": "apiKey"}  # no API_KEY

    node_dir = tmp_path / "node"
    for rendered in render_node(deployment, 0):
        _script(node_dir / Path(rendered.path).name, rendered.content)
    (node_dir / "secrets.env").write_text(f"AMDFLEET_API_KEY={KEY}\n")
    env = {"PATH": f"{tmp_path / 'tgi'}:{os.environ['PATH']}", "RECORD_DIR": str(tmp_path)}
    subprocess.run([str(node_dir / "launch.sh")], env=env, check=True, timeout=30)

    launcher_env = (tmp_path / "launcher-env").read_text()
    assert "API_KEY=<none>\n" in launcher_env  # nothing for the launcher to log or pass on
    assert launcher_env.split("PATH=", 1)[1].startswith(f"{node_dir / 'bin'}:")
    router_argv = (tmp_path / "router-argv").read_text().splitlines()
    assert router_argv == ["--port", "18090"]  # the real router ran, without the key
    assert (tmp_path / "router-env").read_text() == f"API_KEY={KEY}\n"
    assert KEY not in (node_dir / "bin" / "text-generation-router").read_text()


def test_the_docker_runtime_mounts_the_shim_first_on_path() -> None:
    files = render_stack("mi300x-llama405b-tgi")
    argv = exec_argv(node_file(files, 0, "launch.sh"))
    mounts = [argv[i + 1] for i, word in enumerate(argv) if word == "-v"]
    assert f"/opt/amdfleet/mi300x-llama405b-tgi/bin:{CONTAINER_SHIMS}:ro" in mounts
    _image, command = container_command(argv)
    assert command[0] == "text-generation-launcher" and "--api-key" not in command
    assert SECRETS_LOADER.startswith(f'if [ -d {CONTAINER_SHIMS} ]; then PATH="{CONTAINER_SHIMS}:')
    script = node_file(files, 0, "launch.sh")
    assert ': "${AMDFLEET_API_KEY:?' in script and ': "${API_KEY:?' not in script


def test_engines_that_read_their_key_themselves_get_no_shim() -> None:
    for stack in ("mi300x-llama405b-vllm", "mi300x-llama405b-sglang"):
        script = node_file(render_stack(stack), 0, "launch.sh")
        assert "SHIM" not in script and "/run/amdfleet/bin:ro" not in script
