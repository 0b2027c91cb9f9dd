"""A cloud stack end to end through the real Pulumi CLI: DigitalOcean's API (a local
server), an instance that is a real SSH host booted from amdfleet's user-data, and the
same fleet, engine and verification gate as bare metal.

What is real: the Pulumi CLI and engine, amdfleet's provider plugin, the DigitalOcean client
(httpx), a local server implementing the droplet endpoints DigitalOcean documents
(tests/support/clouds/digitalocean_server.py — the seam: no cloud is reachable here),
the droplet's host (an sshd in its own network namespace whose only host key is the one
amdfleet generated and sent in the cloud-config, and whose root accepts only the user's
key from the same document), vLLM's CPU build serving the tiny random Llama on it, and the
verification gate (benchmark + GSM8K scorer).

In order, what a user renting a fleet meets:

* ``pulumi up`` creates the droplet (tagged with project, stack and node), waits until
  it runs, connects with the host key pinned before the first connection, runs
  preflight, starts the engine and passes verification; the ``instances`` output lists
  the droplet with its price, and neither the API token nor the host's private key is
  in any output, the state or the CLI's output; ``amdfleet status`` finds it serving;
* ``amdfleet cloud orphans`` finds a tagged droplet no stack owns (and not the stack's
  own), and ``--delete`` removes it;
* a droplet deleted out of band (its host gone with it): ``pulumi refresh`` drops it and
  everything that ran on it, with a warning, and the next ``up`` rents a new droplet
  with a new pinned key and serves verified again;
* ``pulumi destroy`` deletes the droplet: the server's ledger counts every droplet made
  as deleted, and no lab host still runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from amdfleet.clouds.api import CreateRequest, instance_tags
from amdfleet.clouds.digitalocean import DigitalOceanClient
from tests.e2e.vllm_server import missing_parts
from tests.support.clouds.digitalocean_server import DigitalOceanServer
from tests.support.clouds.lab_boot import LabBoot
from tests.support.hostlab import netns_available
from tests.support.local_stack import (
    compile_caches,
    local_config,
    small_verification,
    with_tiny_llama,
)
from tests.support.prerequisites import missing
from tests.support.pulumi_cli import PulumiWorkspace

STACK = "do-cpu"
TOKEN = "dop_v1_" + "5c" * 32
API_KEY = "cloud-api-key-0b6e4d2a91"
PORT = 18041
SIZE = "s-4vcpu-8gb"
REGION = "nyc3"

pytestmark = [pytest.mark.pulumi, pytest.mark.netns, pytest.mark.vllm]


def stack_config(server: DigitalOceanServer, key_path: Path) -> dict[str, Any]:
    """The committed ``local`` stack on one DigitalOcean CPU droplet."""
    config = with_tiny_llama(local_config())
    config["amdfleet:fleet"] = {
        "cloud": {
            "provider": "digitalocean",
            "region": REGION,
            "plan": SIZE,
            "api_url": server.url,
            "ssh_key_path": str(key_path),
            "api_token_secret": "doToken",
        }
    }
    config["amdfleet:serving"] = {"host": "0.0.0.0", "port": PORT, "max_model_len": 2048}
    config["amdfleet:engine"]["extra_env"] = compile_caches()
    config["amdfleet:verification"] = small_verification()
    config["amdfleet:campaign"] = {"ttl_hours": 2}
    return config


@pytest.fixture(scope="module")
def boot() -> Iterator[LabBoot]:
    absent = missing_parts()
    if absent:
        pytest.fail(f"the cloud stack test needs {', '.join(absent)}; run scripts/setup")
    if not netns_available():
        missing("netns", "network namespaces are not available here")
    with LabBoot() as lab_boot:
        yield lab_boot


@pytest.fixture(scope="module")
def server(boot: LabBoot) -> Iterator[DigitalOceanServer]:
    with DigitalOceanServer.start(TOKEN, lab=boot) as api:
        yield api
    assert not boot.running(), f"lab hosts still running: {boot.running()}"
    assert not api.leaked(), f"droplets never deleted: {api.leaked()}"


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user-key") / "id_ed25519"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "user", "-f", str(path)]
    subprocess.run(argv, check=True)
    return path


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, server: DigitalOceanServer, key_path: Path
) -> Iterator[PulumiWorkspace]:
    ws = PulumiWorkspace(tmp_path_factory.mktemp("cli-cloud"))
    ws.init_stack(STACK, stack_config(server, key_path), {"apiKey": API_KEY, "doToken": TOKEN})
    try:
        yield ws
    finally:
        ws.destroy(STACK, check=False)


@pytest.fixture(scope="module")
def first_up(workspace: PulumiWorkspace) -> dict[str, Any]:
    run = workspace.up(STACK)
    return {"run": run, "outputs": workspace.outputs(STACK, show_secrets=True)}


def _creates(server: DigitalOceanServer) -> list[dict[str, Any]]:
    return [r.body for r in server.log if r.method == "POST" and r.path == "/v2/droplets"]


def test_up_creates_a_tagged_droplet_pins_its_key_and_serves_verified(
    first_up: dict[str, Any], server: DigitalOceanServer, boot: LabBoot
) -> None:
    outputs = first_up["outputs"]
    assert outputs["ready"] is True
    assert outputs["verification"]["passed"] is True
    [instance] = outputs["instances"]
    [body] = _creates(server)
    assert body["name"] == instance["name"] == f"{STACK}-0"
    assert sorted(body["tags"]) == sorted(instance_tags("amdfleet", STACK, f"{STACK}-0"))
    assert (body["size"], body["region"]) == (SIZE, REGION)
    assert instance["id"] == str(server.created[0])
    assert instance["price_hourly_usd"] == pytest.approx(0.07143)
    # The pinned key is the one amdfleet sent in the user-data, and the droplet's host
    # presents exactly that key.
    presented = boot.host_key(instance["id"])
    assert instance["host_key"].split()[:2] == presented.split()[:2]
    assert presented.split()[1] in body["user_data"]
    assert outputs["endpoint"] == f"http://{instance['public_address']}:{PORT}/v1"
    [host] = outputs["hosts"]
    assert host["address"] == instance["public_address"]


def test_the_endpoint_answers_with_the_api_key_and_status_finds_it_serving(
    first_up: dict[str, Any], workspace: PulumiWorkspace
) -> None:
    outputs = first_up["outputs"]
    response = httpx.post(
        f"{outputs['endpoint']}/completions",
        json={"model": outputs["model"], "prompt": "Hello", "max_tokens": 4},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"]
    refused = httpx.get(f"{outputs['endpoint']}/models", timeout=10)
    assert refused.status_code == 401

    # amdfleet status reaches the droplet as the providers do: its address and the host
    # key amdfleet generated and pinned, from the state; no token or key in what it prints
    status = workspace.amdfleet("status", STACK, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["verdict"] == "serving"
    [node] = outputs["hosts"]
    engine = next(c for c in report["checks"] if c["check"] == "engine")
    assert (engine["subject"], engine["ok"]) == (node["name"], True)
    for secret in (API_KEY, TOKEN):
        assert secret not in status.stdout + status.stderr


def test_no_token_and_no_host_private_key_anywhere(
    first_up: dict[str, Any], workspace: PulumiWorkspace, server: DigitalOceanServer
) -> None:
    [body] = _creates(server)
    private = _private_key_lines(body["user_data"])
    assert private
    plain = json.dumps(workspace.outputs(STACK))
    revealed = json.dumps(first_up["outputs"])
    backend = workspace.backend_text()
    text = first_up["run"].text
    for where, content in (
        ("outputs", plain),
        ("outputs --show-secrets", revealed),
        ("state", backend),
        ("pulumi up output", text),
    ):
        assert TOKEN not in content, f"the API token is in the {where}"
        assert not any(line in content for line in private), f"the host key is in the {where}"
    assert workspace.outputs(STACK)["api_key"] == "[secret]"


def test_orphans_lists_and_deletes_only_what_no_stack_owns(
    first_up: dict[str, Any], workspace: PulumiWorkspace, server: DigitalOceanServer
) -> None:
    [owned] = first_up["outputs"]["instances"]
    with DigitalOceanClient(TOKEN, base_url=server.url) as client:
        leaked = client.create(
            CreateRequest(
                name="leaked-0",
                region=REGION,
                size=SIZE,
                image="ubuntu-24-04-x64",
                tags=instance_tags("amdfleet", "gone", "gone-0"),
                user_data="",
            )
        )
    argv = [sys.executable, "-m", "amdfleet.cli", "cloud", "orphans", "--provider", "digitalocean"]
    argv += ["--api-url", server.url, "--project-dir", str(workspace.root), "--json"]
    env = {**workspace.env, "DIGITALOCEAN_TOKEN": TOKEN, "PATH": _path_with_pulumi(workspace)}
    listed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 1, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [leaked.id]
    assert rows[0]["stack"] == "gone"
    assert TOKEN not in listed.stdout + listed.stderr
    deleted = subprocess.run(
        [*argv[:-1], "--delete", "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "deleted 1 orphan(s)" in deleted.stdout
    assert int(leaked.id) in server.deleted
    assert int(owned["id"]) in server.droplets  # the stack's droplet is untouched


def test_a_droplet_deleted_out_of_band_is_dropped_by_refresh_and_made_again_by_up(
    first_up: dict[str, Any], workspace: PulumiWorkspace, server: DigitalOceanServer, boot: LabBoot
) -> None:
    [old] = workspace.outputs(STACK)["instances"]
    server.vanish(int(old["id"]))  # deleted in the console: its host is gone too
    assert old["id"] not in boot.running()

    refresh = workspace.refresh(STACK)

    kinds = [r["type"].rsplit(":", 1)[-1] for r in workspace.resources(STACK).values()]
    for gone in ("CloudInstance", "SshHost", "ModelWeights", "EngineService"):
        assert gone not in kinds, f"{gone} still in the state after refresh"
    assert "does not answer" in refresh.text and f"cloud instance {old['id']}" in refresh.text
    assert "Verification" in kinds  # a record of a past run: kept, and re-run by the next up

    workspace.up(STACK)

    outputs = workspace.outputs(STACK, show_secrets=True)
    [new] = outputs["instances"]
    assert new["id"] != old["id"] and new["id"] in boot.running()
    assert new["host_key"] != old["host_key"]
    assert new["host_key"].split()[:2] == boot.host_key(new["id"]).split()[:2]
    assert outputs["ready"] is True
    assert outputs["endpoint"] == f"http://{new['public_address']}:{PORT}/v1"


def test_destroy_deletes_the_droplet(
    first_up: dict[str, Any], workspace: PulumiWorkspace, server: DigitalOceanServer, boot: LabBoot
) -> None:
    workspace.destroy(STACK)
    assert not server.leaked()
    assert not boot.running()
    assert workspace.outputs(STACK) == {}


def _private_key_lines(user_data: str) -> list[str]:
    """The base64 lines of the host private key amdfleet sent (each long enough that
    finding one anywhere means the key leaked, however it was wrapped)."""
    document = yaml.safe_load(user_data)
    lines = document["ssh_keys"]["ed25519_private"].strip().splitlines()
    return [line for line in lines[1:-1] if len(line) >= 40]


def _path_with_pulumi(workspace: PulumiWorkspace) -> str:
    return f"{Path(workspace.pulumi).parent}{os.pathsep}{os.environ.get('PATH', '')}"
