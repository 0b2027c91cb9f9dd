"""Rendered files: deterministic, hashed, valid shell, and correct when executed.

The process-runtime launch script is executed for real with a recording executable in
place of the engine. The docker-runtime script is executed with a recording ``docker``
on PATH: no Docker engine runs on this machine (see ENVIRONMENT.md), and the thing under
test is the exact argv the script hands to docker, which the recorder captures.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amdfleet.config import load_stack_file, stack_names
from amdfleet.errors import RenderError
from amdfleet.plan import DeploymentPlan, plan
from amdfleet.render import (
    CONTAINER_SECRETS,
    _file,
    file_body_hash,
    render_node,
    render_plan,
    write_files,
)
from amdfleet.shellwords import shell_quote
from tests.unit.rendered import container_command, exec_argv, flag_value, node_file

HERE = Path(__file__).parent
RECORDER = """#!/bin/sh
# Records its argv (one per line) and environment, then exits 0.
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$RECORD_DIR/argv"
env > "$RECORD_DIR/env"
"""


@pytest.mark.parametrize("name", stack_names())
def test_rendering_is_deterministic_and_hashed(name: str) -> None:
    spec = load_stack_file(name).spec
    first, second = render_plan(plan(spec)), render_plan(plan(spec))
    assert [(f.path, f.content) for f in first] == [(f.path, f.content) for f in second]
    manifest = json.loads(next(f for f in first if f.path == "manifest.json").content)
    assert set(manifest["files"]) == {f.path for f in first} - {"manifest.json"}
    for rendered in (f for f in first if f.path != "manifest.json"):
        entry = manifest["files"][rendered.path]
        assert entry["mode"] == oct(rendered.mode)
        if rendered.path.endswith(".json"):
            continue
        # the hash is of the body: the file without its own header line, hashed here
        lines = rendered.content.splitlines(keepends=True)
        [header] = [line for line in lines if "amdfleet-content-hash: sha256:" in line]
        body = "".join(line for line in lines if line is not header)
        digest = hashlib.sha256(body.encode()).hexdigest()
        assert header == f"# amdfleet-content-hash: sha256:{digest}\n"
        assert entry["sha256"] == rendered.sha256 == digest


@pytest.mark.parametrize("name", stack_names())
def test_scripts_are_valid_bash(name: str, tmp_path: Path) -> None:
    deployment = plan(load_stack_file(name).spec)
    scripts = [p for p in write_files(render_plan(deployment), tmp_path) if p.name == "launch.sh"]
    assert len(scripts) == len(deployment.nodes)  # one per node, none skipped
    for path in scripts:
        checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0 and checked.stderr == "", (path, checked.stderr)
        assert path.read_text().startswith("#!/")


def test_hash_changes_with_content() -> None:
    files = render_node(plan(load_stack_file("local").spec), 0)
    script = next(f for f in files if f.path.endswith("launch.sh"))
    tampered = script.content.replace("--port", "--port-x")
    assert file_body_hash(tampered) != script.sha256
    assert file_body_hash(script.content) == script.sha256


def test_missing_template_value_is_an_error() -> None:
    with pytest.raises(RenderError, match=r"launch\.sh\.j2"):
        _file("x/launch.sh", "launch.sh.j2", {}, 0o755)


def test_no_secret_values_are_rendered(tmp_path: Path) -> None:
    for name in stack_names():
        for rendered in render_plan(plan(load_stack_file(name).spec)):
            assert "secure:" not in rendered.content
            assert "secrets.env" not in rendered.path


def test_shell_quote_keeps_env_references_expandable() -> None:
    assert shell_quote("${AMDFLEET_API_KEY}") == '"${AMDFLEET_API_KEY}"'
    assert shell_quote("$(rm -rf /)") == "'$(rm -rf /)'"
    assert shell_quote('{"a": [1]}') == "'{\"a\": [1]}'"


def test_ray_head_checks_placement_of_every_gpu_then_serves() -> None:
    """Docker runtime: the steps run in the image (``bash -c``), where ``python3`` and
    ``ray`` are the image's own. Not served for real: see ``test_rendered_golden``."""
    deployment = plan(load_stack_file(str(HERE / "stacks/Pulumi.ray-2node.yaml")).spec)
    files = {f.path: f for f in render_plan(deployment)}
    head, worker = node_file(files, 0, "launch.sh"), node_file(files, 1, "launch.sh")
    image, command = container_command(exec_argv(head))
    assert command[:2] == ["bash", "-c"] and image == deployment.image.image
    inner = command[2]  # bash -c '<steps>'
    assert inner.startswith("ray start --head --port 6380 --node-ip-address 10.0.0.1\n")
    # both nodes and all 2 x 8 GPUs, in the image's Python, before vLLM starts
    assert 'python3 - 2 16 900 <<"PLACEMENT"\n' in inner
    compile(placement_program(inner), "placement", "exec")
    assert inner.index("PLACEMENT\nexec vllm serve ") > inner.index("<<")
    assert "--distributed-executor-backend ray" in " ".join(inner.split())
    worker_inner = " ".join(exec_argv(worker)[-1].split())
    assert worker_inner.startswith("deadline=") and "until python3 -c " in worker_inner
    assert "create_connection" in worker_inner and "10.0.0.1 6380" in worker_inner
    assert worker_inner.endswith(
        "exec ray start --address 10.0.0.1:6380 --node-ip-address 10.0.0.2 --block"
    )
    assert "vllm serve" not in worker_inner and "PLACEMENT" not in worker_inner


def test_ray_process_runtime_runs_ray_and_the_check_from_the_engine_venv(tmp_path: Path) -> None:
    """Process runtime, executed for real by bash with recording ``ray``, ``python3`` and
    ``vllm`` in one venv-like directory: the host's PATH has no Ray, so ``ray`` and the
    placement check must come from beside the engine executable, in this order."""
    venv_bin = tmp_path / "venv" / "bin"
    for name in ("ray", "python3", "vllm"):
        _call_recorder(venv_bin / name)
    deployment = plan(load_stack_file(str(ray_cpu_stack(tmp_path, venv_bin / "vllm"))).spec)
    head_ray = [str(venv_bin / "ray"), "start", "--head", "--port", "6390"]
    assert list(deployment.head.ray_argv) == [*head_ray, "--node-ip-address", "10.77.9.10"]
    assert deployment.nodes[1].ray_argv[0] == str(venv_bin / "ray")
    record = tmp_path / "record"
    record.mkdir()
    _run_node(deployment, 0, tmp_path / "node0", record)
    calls = (record / "calls").read_text().splitlines()
    assert (
        calls
        == [
            f"{venv_bin}/ray start --head --port 6390 --node-ip-address 10.77.9.10",
            f"{venv_bin}/python3 - 2 0 900",  # a CPU stack: two nodes, no GPUs to count
            f"{venv_bin}/vllm {' '.join(deployment.head.argv[1:])}",
        ]
    )
    program = (record / "python3.stdin").read_text()
    compile(program, "placement", "exec")
    assert 'ray.init(address="auto"' in program and 'n["Alive"]' in program
    assert flag_value(list(deployment.head.argv), "--distributed-executor-backend") == "ray"


def test_ray_worker_waits_for_the_head_then_blocks_in_ray(tmp_path: Path) -> None:
    """The worker's wait runs in the engine's Python too; with the head's port answering
    (a real listening socket) it goes straight on to ``ray start --block``."""
    venv_bin = tmp_path / "venv" / "bin"
    for name in ("ray", "vllm"):
        _call_recorder(venv_bin / name)
    (venv_bin / "python3").symlink_to(sys.executable)
    with socket.create_server(("127.0.0.1", 0)) as head:
        port = head.getsockname()[1]
        stack = ray_cpu_stack(tmp_path, venv_bin / "vllm", head="127.0.0.1", ray_port=port)
        deployment = plan(load_stack_file(str(stack)).spec)
        record = tmp_path / "record"
        record.mkdir()
        _run_node(deployment, 1, tmp_path / "node1", record)
    calls = (record / "calls").read_text().splitlines()
    assert calls == [
        f"{venv_bin}/ray start --address 127.0.0.1:{port} --node-ip-address 10.77.9.11 --block"
    ]


def ray_cpu_stack(
    tmp_path: Path, executable: Path, *, head: str = "10.77.9.10", ray_port: int = 6390
) -> Path:
    """A CPU stack of two SSH hosts serving the tiny Llama with pipeline parallel over Ray,
    process runtime, the engine at ``executable``.

    Ray is tested as rendered text and with recording executables only, never served
    for real: vLLM's CPU build refuses the Ray executor ("current platform cpu does not
    support ray"), measured as the docstring of ``test_rendered_golden`` records.
    """
    document = yaml.safe_load((HERE.parent.parent / "stacks/Pulumi.local.yaml").read_text())
    config = document["config"]
    hosts = [
        {"name": f"host{i}", "address": address, "user": "root", "key_path": "/root/.ssh/id",
         "host_key": f"SHA256:REPLACE0with0your0host0key0fingerprint0000{i}",
         "network_interface": "eth0"}
        for i, address in enumerate((head, "10.77.9.11"))
    ]  # fmt: skip
    config["amdfleet:fleet"] = {"hosts": hosts}
    config["amdfleet:topology"] = {"accelerator": "cpu", "nodes": 2, "gpus_per_node": 1}
    config["amdfleet:engine"]["executable"] = str(executable)
    config["amdfleet:engine"].pop("extra_args", None)  # no eager mode with pipeline parallel
    config["amdfleet:parallelism"] = {"tp": 1, "pp": 2, "backend": "ray", "ray_port": ray_port}
    config["amdfleet:serving"]["host"] = "0.0.0.0"
    config["amdfleet:verification"] = {"enabled": False}
    path = tmp_path / "Pulumi.ray-cpu.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def placement_program(steps: str) -> str:
    """The Python program the head's placement check feeds its interpreter."""
    start = steps.index('<<"PLACEMENT"\n') + len('<<"PLACEMENT"\n')
    return steps[start : steps.index("\nPLACEMENT\n", start)]


def _call_recorder(path: Path) -> None:
    """An executable that appends its path and argv to ``$RECORD_DIR/calls`` and saves
    its stdin, then exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '#!/bin/sh\necho "$0 $*" >>"$RECORD_DIR/calls"\ncat >"$RECORD_DIR/$(basename "$0").stdin"\n'
    )
    path.chmod(0o755)


def _run_node(deployment: DeploymentPlan, rank: int, node_dir: Path, record: Path) -> None:
    for rendered in render_node(deployment, rank):
        target = node_dir / Path(rendered.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered.content)
        target.chmod(rendered.mode)
    (node_dir / "secrets.env").write_text("AMDFLEET_API_KEY=k\nVLLM_API_KEY=k\n")
    env = {"PATH": "/usr/bin:/bin", "RECORD_DIR": str(record)}
    subprocess.run(
        [str(node_dir / "launch.sh")], env=env, check=True, timeout=30, stdin=subprocess.DEVNULL
    )


def _local_stack_with(tmp_path: Path, executable: Path) -> Path:
    document = yaml.safe_load((HERE.parent.parent / "stacks/Pulumi.local.yaml").read_text())
    document["config"]["amdfleet:engine"]["executable"] = str(executable)
    path = tmp_path / "Pulumi.local-recorded.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _recorder(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(RECORDER)
    path.chmod(0o755)
    return path


def test_process_launch_script_runs_engine_with_env_and_secrets(tmp_path: Path) -> None:
    executable = _recorder(tmp_path, "vllm")
    deployment = plan(load_stack_file(str(_local_stack_with(tmp_path, executable))).spec)
    node_dir = tmp_path / "node"
    for rendered in render_node(deployment, 0):
        target = node_dir / Path(rendered.path).name
        target.parent.mkdir(exist_ok=True)
        target.write_text(rendered.content)
        target.chmod(rendered.mode)
    (node_dir / "secrets.env").write_text("AMDFLEET_API_KEY=k-123\nVLLM_API_KEY=k-123\n")
    env = {"PATH": os.environ["PATH"], "RECORD_DIR": str(tmp_path)}
    subprocess.run([str(node_dir / "launch.sh")], env=env, check=True, timeout=30)
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == list(deployment.head.argv[1:])
    recorded_env = dict(
        line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines() if "=" in line
    )
    for key, value in deployment.head.env.items():
        assert recorded_env[key] == value
    assert recorded_env["VLLM_API_KEY"] == "k-123"


def test_process_launch_script_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    executable = _recorder(tmp_path, "vllm")
    deployment = plan(load_stack_file(str(_local_stack_with(tmp_path, executable))).spec)
    write_files(render_node(deployment, 0), tmp_path / "out")
    script = next((tmp_path / "out").glob("node0-*/launch.sh"))
    result = subprocess.run(
        [str(script)],
        env={"PATH": os.environ["PATH"], "RECORD_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "secrets.env must set AMDFLEET_API_KEY" in result.stderr
    assert not (tmp_path / "argv").exists()


def test_docker_launch_script_passes_exact_argv_to_docker(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path, "docker")
    deployment = plan(load_stack_file("mi355x-llama70b").spec)
    write_files(render_node(deployment, 0), tmp_path / "out")
    node_dir = next((tmp_path / "out").glob("node0-*"))
    (node_dir / "secrets.env").write_text("AMDFLEET_API_KEY=k\nVLLM_API_KEY=k\n")
    env = {"PATH": f"{recorder.parent}:{os.environ['PATH']}", "RECORD_DIR": str(tmp_path)}
    subprocess.run([str(node_dir / "launch.sh")], env=env, check=True, timeout=30)
    argv = (tmp_path / "argv").read_text().splitlines()
    # Detached, restarted by dockerd on failure (no --rm: it excludes a restart policy).
    assert argv[:4] == ["run", "--detach", "--restart", "on-failure:5"]
    assert "--rm" not in argv
    assert container_command(argv) == (deployment.image.image, list(deployment.head.argv))
    # Secrets are a read-only mount the loader reads, never --env-file (docker inspect).
    env_files = [argv[i + 1] for i, a in enumerate(argv) if a == "--env-file"]
    assert [Path(p).name for p in env_files] == ["engine.env"]
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert f"{node_dir / 'secrets.env'}:{CONTAINER_SECRETS}:ro" in mounts
    assert flag_value(argv, "--compilation-config").startswith('{"cudagraph_mode"')


def test_sglang_two_nodes_share_one_rendezvous() -> None:
    deployment = plan(load_stack_file(str(HERE / "stacks/Pulumi.sglang-2node.yaml")).spec)
    files = {f.path: f for f in render_plan(deployment)}
    for rank in (0, 1):
        argv = exec_argv(node_file(files, rank, "launch.sh"))
        assert flag_value(argv, "--tp") == "16"
        assert flag_value(argv, "--nnodes") == "2"
        assert flag_value(argv, "--node-rank") == str(rank)
        assert flag_value(argv, "--dist-init-addr") == "10.0.1.1:5000"
        assert "--network=host" in argv
    assert deployment.warnings[0].startswith("tensor parallelism (16) spans nodes")
