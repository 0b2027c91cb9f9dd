"""The engine interface: every engine's own flags, key handling and readiness, a fourth
engine added as one module plus one catalog entry, and nodes that carry their host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from amdfleet import catalog, engines
from amdfleet.catalog.engines import EngineEntry
from amdfleet.config import StackSpec, load_stack_file, parse_stack
from amdfleet.errors import ConfigError, PlanError
from amdfleet.plan import plan
from amdfleet.render import render_plan
from tests.support import toy_engine
from tests.unit.rendered import env_lines, exec_argv, flag_value, node_file, render_stack

TINY = {
    "params_b": 0.01,
    "layers": 2,
    "hidden": 64,
    "intermediate": 128,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 16,
    "vocab": 1000,
    "max_context": 4096,
}


def _cpu_stack(engine: str, **serving: object) -> dict[str, object]:
    return {
        "fleet": {"hosts": [{"name": "box", "connection": "local"}]},
        "topology": {"accelerator": "cpu", "gpus_per_node": 1},
        "model": {
            "id": "tiny",
            "checkpoint": "/models/tiny",
            "served_name": "tiny",
            "architecture": TINY,
        },
        "engine": {"name": engine, "runtime": "process", "executable": "/venv/bin/toy"},
        "serving": {"port": 9000, "max_model_len": 2048, "api_key_secret": "apiKey", **serving},
        "weights": {"local_path": "/models/tiny"},
        "verification": {"enabled": False},
    }


def test_every_catalog_engine_has_a_module_named_for_it() -> None:
    assert list(engines.REGISTRY) == list(catalog.ENGINES)
    for name, entry in catalog.ENGINES.items():
        engine = engines.engine(name)
        assert engine.name == name == entry.name
        assert engine.ready_paths[0] == "/health"
        assert set(engine.parallelism) <= {"tp", "pp", "dp"}


@pytest.mark.parametrize(
    ("stack", "key_vars", "key_flag"),
    [
        ("mi300x-llama405b-vllm", {"AMDFLEET_API_KEY", "VLLM_API_KEY"}, None),
        ("mi300x-llama405b-tgi", {"AMDFLEET_API_KEY"}, None),  # the router shim sets API_KEY
        ("mi300x-llama405b-sglang", {"AMDFLEET_API_KEY"}, None),
    ],
)
def test_each_engine_takes_the_api_key_its_own_way(
    stack: str, key_vars: set[str], key_flag: str | None
) -> None:
    """vLLM reads a variable; TGI's router gets one from amdfleet's shim (its launcher gets
    none: test_key_shim.py); SGLang reads a YAML file (``--config``) the launch script
    writes: no engine has the key, or a reference to it, on its command line."""
    files = render_stack(stack)
    argv = exec_argv(node_file(files, 0, "launch.sh"))
    deployment = plan(_load(stack))
    assert set(deployment.head.secret_env) - {"HF_TOKEN"} == key_vars
    # The engine serves offline: the Hugging Face token is the weights download's only.
    assert deployment.head.secret_env == dict.fromkeys(key_vars, "apiKey")
    assert deployment.weights.hf_token_secret == "hfToken"
    assert "HF_TOKEN" not in node_file(files, 0, "launch.sh")
    if key_flag is None:
        assert "--api-key" not in argv
    else:
        assert flag_value(argv, "--api-key") == key_flag
    assert not any("API_KEY" in word for word in argv)
    if stack.endswith("sglang"):
        config = f"/opt/amdfleet/{stack}/engine-secrets.yaml"
        assert flag_value(argv, "--config") == config
        assert f"-v {config}:{config}:ro" in node_file(files, 0, "launch.sh")
    else:
        assert "--config" not in argv
    # No key value is ever rendered: only the secret's name appears in the env file.
    env = env_lines(node_file(files, 0, "engine.env"))
    assert not key_vars & set(env)


def test_a_fourth_engine_is_one_module_its_registry_line_and_one_catalog_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(engines.REGISTRY, "toy", toy_engine.ENGINE)
    monkeypatch.setitem(catalog.ENGINES, "toy", EngineEntry("toy", "a toy engine"))
    deployment = plan(parse_stack("toy-box", _cpu_stack("toy")))

    assert deployment.head.argv == (
        "/venv/bin/toy",
        "serve",
        "--listen",
        "0.0.0.0:9000",
        "--model",
        "/models/tiny",
        "--context",
        "2048",
    )
    assert deployment.head.secret_env == {"AMDFLEET_API_KEY": "apiKey", "TOY_KEY": "apiKey"}
    assert deployment.engine.readiness.paths == ("/ready",)
    assert deployment.engine.readiness.base_url == "http://127.0.0.1:9000"
    launch = next(f for f in render_plan(deployment) if f.path.endswith("launch.sh"))
    assert exec_argv(launch.content) == list(deployment.head.argv)


def test_an_engine_the_catalog_does_not_list_is_refused_naming_the_listed_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack("toy-box", _cpu_stack("toy"))
    issue = caught.value.issues[0]
    assert issue.subject == "engine.name"
    assert "'toy'" in issue.detail
    assert issue.hint == "use 'vllm', 'sglang' or 'tgi'"


def test_an_engine_without_a_cpu_backend_is_refused_on_cpu() -> None:
    with pytest.raises(PlanError) as caught:
        plan(parse_stack("tgi-box", _cpu_stack("tgi")))
    issue = next(i for i in caught.value.issues if i.subject == "engine.name")
    assert issue.detail == "tgi has no CPU backend"
    assert issue.hint == "use vllm"


def test_nodes_carry_their_connection_data_and_requirement() -> None:
    deployment = plan(_load("mi300x-2node-llama405b-bf16"))
    hosts = _load("mi300x-2node-llama405b-bf16").fleet.hosts
    for node, host in zip(deployment.nodes, hosts, strict=True):
        assert node.target is not None
        assert (node.target.name, node.target.address, node.target.user) == (
            host.name,
            host.address,
            host.user,
        )
        assert node.target.host_key == host.host_key
        assert node.requirement.gpu_count == 8
        assert node.requirement.accelerator == "mi300x"
        assert node.requirement.weights_bytes == deployment.model.checkpoint_bytes


def _load(name: str) -> StackSpec:
    return load_stack_file(name).spec


def test_sglang_key_file_is_written_0600_and_parses_back_to_the_key(tmp_path: Path) -> None:
    """The real rendered launch script, run by bash with a key full of YAML and shell
    syntax; ``docker`` is a stand-in that records its arguments (no SGLang image here)."""
    key = "k'ey\" with: #yaml, $shell `and` \\ %s"
    files = render_stack("mi300x-llama405b-sglang")
    for name in ("launch.sh", "engine.env"):
        (tmp_path / name).write_text(node_file(files, 0, name))
    (tmp_path / "secrets.env").write_text(f"AMDFLEET_API_KEY={key}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >>"$(dirname "$0")/argv"\n')
    docker.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["bash", str(tmp_path / "launch.sh")], env=env, check=True, timeout=30)
    written = tmp_path / "engine-secrets.yaml"
    assert written.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(written.read_text()) == {"api-key": key}
    argv = (bin_dir / "argv").read_text()
    assert "--config" in argv and key not in argv and "k'ey" not in argv
