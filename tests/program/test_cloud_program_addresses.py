"""A two-node cloud stack's program under Pulumi's mocks (tests/support/mocked_program):
once its instances' addresses are known, the resources built from its one plan carry
them where a plan on those hosts would (the cluster check's addresses, the head's
address in every command, each node's own in its environment, the launch files), and
no placeholder is left. ``tests/program/test_cli_preview.py`` checks, with the real CLI,
that its first preview lists the whole graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from amdfleet.components import launch_files
from amdfleet.config import StackSpec, load_stack_file
from amdfleet.plan import plan
from tests.support.mocked_program.__main__ import DIGEST, HOST_KEY

ROOT = Path(__file__).resolve().parents[2]


def _two_node_stack(tmp_path: Path) -> Path:
    document = yaml.safe_load((ROOT / "stacks/Pulumi.do-mi300x-llama70b.yaml").read_text())
    config = document["config"]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config["amdfleet:fleet"]["cloud"].update(
        count=2, max_hourly_usd=40, max_total_usd=500, ssh_key_path=str(key)
    )
    config["amdfleet:topology"]["nodes"] = 2
    config["amdfleet:parallelism"]["pp"] = 2
    path = tmp_path / "Pulumi.do-2node.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _registered(stack_file: Path, out: Path, *, private: bool) -> dict[str, dict[str, Any]]:
    argv = [sys.executable, "-m", "tests.support.mocked_program", str(stack_file), str(out)]
    subprocess.run([*argv, *([] if private else ["--no-private-address"])], check=True, cwd=ROOT)
    return {r["name"]: r for r in json.loads(out.read_text())["registered"]}


def _on_hosts(spec: StackSpec, addresses: list[tuple[str, str | None]]) -> StackSpec:
    """``spec`` with its instances as SSH hosts at ``addresses`` (public, private)."""
    assert spec.fleet.cloud is not None
    hosts = [
        {
            "name": f"{spec.name}-{rank}",
            "connection": "ssh",
            "address": public,
            "user": "root",
            "key_path": spec.fleet.cloud.ssh_key_path,
            "host_key": HOST_KEY,
            **({"private_address": private} if private else {}),
        }
        for rank, (public, private) in enumerate(addresses)
    ]
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["fleet"] = {"hosts": hosts}
    return StackSpec.model_validate(data)


@pytest.mark.parametrize("private", [True, False], ids=["private-network", "public-only"])
def test_two_node_cloud_resources_carry_the_instances_addresses(
    tmp_path: Path, private: bool
) -> None:
    stack_file = _two_node_stack(tmp_path)
    registered = _registered(stack_file, tmp_path / "registered.json", private=private)

    public = ["203.0.113.10", "203.0.113.11"]
    cluster = ["10.0.0.10", "10.0.0.11"] if private else public
    head = cluster[0]
    assert "-cluster-address>" not in json.dumps(registered)
    nodes = registered["deployment-cluster"]["inputs"]["nodes"]
    assert [n["cluster_address"] for n in nodes] == cluster
    assert [n["host"]["address"] for n in nodes] == public
    check = registered["deployment-command-check"]["inputs"]
    assert check["env"]["VLLM_HOST_IP"] == head
    argv = [word for run in check["checks"] for word in run["argv"]]
    heads = [argv[i + 1] for i, word in enumerate(argv) if word == "--master-addr"]
    assert heads == [head, head]
    # Each node's launch files are those of the stack planned on its instances' hosts.
    spec = load_stack_file(str(stack_file)).spec
    hosts = [(p, c if private else None) for p, c in zip(public, cluster, strict=True)]
    on_hosts = plan(_on_hosts(spec, hosts))
    image = on_hosts.image.image
    assert image is not None
    ref = f"{image.split(':')[0]}@{DIGEST}"
    engine_nodes = registered["deployment-engine"]["inputs"]["nodes"]
    for node, inputs in zip(on_hosts.nodes, engine_nodes, strict=True):
        assert inputs["files"] == launch_files(on_hosts, node, ref)
        assert f"VLLM_HOST_IP={node.cluster_address}" in inputs["files"]["engine.env"]["content"]
