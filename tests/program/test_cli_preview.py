"""``pulumi preview`` with the real CLI: every committed stack shows its resource graph,
and a bad stack fails with the field-named error before any resource is registered.

Real: the Pulumi CLI and engine (built by scripts/install-pulumi), the language host,
``__main__.py``, the dynamic-provider host (preview calls Check and Diff only, so no host
is contacted: the GPU stacks name documentation addresses). The stack files are copied
into a throwaway workspace; secrets are set with ``pulumi config set --secret``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from tests.support.pulumi_cli import PulumiWorkspace

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted(ROOT.glob("stacks/Pulumi.*.yaml"))
# A cloud stack's first preview shows its instances only: the hosts and everything on
# them are built once the instances exist (amdfleet/cloud_fleet.py); it is checked on its
# own below. Its plan is tested in tests/unit/test_cloud_plan.py, and a whole cloud
# stack's up and destroy in tests/program/test_cli_cloud.py.
CLOUD = pytest.mark.skip(reason="a cloud stack: test_cloud_stack_preview_shows_its_instances")
BAD = ROOT / "tests/unit/bad_stacks"
SECRETS = {
    "apiKey": "preview-api-key-5d1f0c",
    "hfToken": "hf_previewTokenA1b2C3d4",
    "registryPassword": "preview-registry-password-81c2",
}
DYN = "pulumi-python:dynamic/amdfleet"

pytestmark = pytest.mark.pulumi


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulumiWorkspace]:
    yield PulumiWorkspace(tmp_path_factory.mktemp("preview"))


def _stack_name(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def _expected_graph(path: Path) -> dict[str, str]:
    """Resource name -> its type, as the plan says the program must register them."""
    stack = load_stack_file(str(path))
    deployment = plan(stack.spec)
    graph = {
        "fleet": "amdfleet:index:Fleet",
        "deployment": "amdfleet:index:Deployment",
        "deployment-command-check": f"{DYN}:EngineCommandCheck",  # on the head, first
    }
    multi_node = len(deployment.nodes) > 1
    for node in deployment.nodes:
        graph[f"fleet-{node.name}"] = f"{DYN}:SshHost"
        graph[f"deployment-weights-{node.name}"] = f"{DYN}:ModelWeights"
        if not multi_node:
            graph[f"deployment-engine-{node.name}"] = f"{DYN}:EngineService"
        if deployment.engine.runtime == "docker" and deployment.image.image:
            graph[f"deployment-image-{node.name}"] = f"{DYN}:EngineImage"
    image = deployment.image
    if deployment.engine.runtime == "docker" and image.build and image.registry:
        graph["deployment-image-build"] = f"{DYN}:EngineImageBuild"  # built once, pushed
    elif deployment.engine.runtime == "docker" and image.pin:
        graph["deployment-image-pin"] = f"{DYN}:ImagePin"  # a tag pinned to its digest
    if multi_node:  # one engine resource and one cluster check for all nodes
        graph["deployment-engine"] = f"{DYN}:EngineCluster"
        graph["deployment-cluster"] = f"{DYN}:ClusterCheck"
    if deployment.fabric is not None:
        graph["deployment-fabric"] = f"{DYN}:FabricCheck"
    if stack.spec.verification.enabled:
        graph["deployment-verification"] = f"{DYN}:Verification"
        graph["deployment-readiness"] = f"{DYN}:ReadinessGate"
    return graph


def _committed(path: Path) -> object:
    cloud = load_stack_file(str(path)).spec.fleet.cloud is not None
    return pytest.param(path, id=_stack_name(path), marks=[CLOUD] if cloud else [])


@pytest.mark.parametrize("path", [_committed(p) for p in STACKS])
def test_preview_shows_every_committed_stacks_resource_graph(
    workspace: PulumiWorkspace, path: Path
) -> None:
    stack = _stack_name(path)
    shutil.copy(path, workspace.stack_file(stack))
    workspace.run(["stack", "init", stack], timeout=60)
    for key in load_stack_file(str(path)).missing_secrets:
        workspace.set_secret(stack, key, SECRETS[key])

    preview = workspace.preview(stack)

    steps = preview.documents[0]["steps"]
    registered = {s["urn"].rsplit("::", 1)[-1]: s for s in steps if s["op"] == "create"}
    expected = _expected_graph(path)
    root = next(s for s in steps if s["newState"]["type"] == "pulumi:pulumi:Stack")
    assert set(registered) - {root["urn"].rsplit("::", 1)[-1]} == set(expected)
    for name, kind in expected.items():
        state = registered[name]["newState"]
        assert state["type"] == kind, name
        parent = state.get("parent", "").rsplit("::", 1)[-1]
        if kind.startswith("amdfleet:index:"):
            assert parent == root["urn"].rsplit("::", 1)[-1], name
        else:
            assert parent == ("fleet" if kind.endswith(":SshHost") else "deployment"), name
    # The preview already knows what an application will read, and keeps the key secret.
    assert f'model       : "{plan(load_stack_file(str(path)).spec).model.served_name}"' in (
        workspace.run(["preview", "--stack", stack], timeout=300).stdout
    )
    assert SECRETS["apiKey"] not in preview.text
    assert SECRETS["registryPassword"] not in preview.text


CLOUD_STACKS = [p for p in STACKS if load_stack_file(str(p)).spec.fleet.cloud is not None]
CLOUD_TOKEN = "preview-cloud-token-7a3e19"


@pytest.mark.parametrize("path", CLOUD_STACKS, ids=[_stack_name(p) for p in CLOUD_STACKS])
def test_cloud_stack_preview_shows_its_instances(
    workspace: PulumiWorkspace, path: Path, tmp_path: Path
) -> None:
    """The committed cloud stack, with a key of this test's at ``ssh_key_path``: its
    preview registers the cloud fleet and one tagged instance per node, calls no cloud
    API (none is reachable here) and shows no token."""
    stack = _stack_name(path)
    key = tmp_path / "id_ed25519"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]
    subprocess.run(argv, check=True)
    document = yaml.safe_load(path.read_text())
    document["config"]["amdfleet:fleet"]["cloud"]["ssh_key_path"] = str(key)
    workspace.stack_file(stack).write_text(yaml.safe_dump(document))
    workspace.run(["stack", "init", stack], timeout=60)
    for secret in load_stack_file(str(path)).missing_secrets:
        workspace.set_secret(stack, secret, SECRETS.get(secret, CLOUD_TOKEN))

    preview = workspace.preview(stack)

    steps = preview.documents[0]["steps"]
    created = {s["urn"].rsplit("::", 1)[-1]: s["newState"] for s in steps if s["op"] == "create"}
    spec = load_stack_file(str(path)).spec
    nodes = [f"{spec.name}-{i}" for i in range(spec.topology.nodes)]
    roots = [name for name, state in created.items() if state["type"] == "pulumi:pulumi:Stack"]
    assert len(roots) == 1
    del created[roots[0]]
    assert created.pop("cloud")["type"] == "amdfleet:index:CloudFleet"
    assert sorted(created) == sorted(f"cloud-{node}" for node in nodes)
    for node in nodes:
        state = created[f"cloud-{node}"]
        assert state["type"] == f"{DYN}:CloudInstance"
        assert state["inputs"]["size"] == spec.fleet.cloud.plan
        assert f"amdfleet-node-{node}" in state["inputs"]["tags"]
    assert CLOUD_TOKEN not in preview.text


# Bad stacks from the unit corpus, one per class of mistake; each file's header names the
# field the error must name and text it must contain.
BAD_CASES = [
    "Pulumi.bad-02-typo-field.yaml",  # schema: unknown key
    "Pulumi.bad-04-port-not-a-number.yaml",  # schema: wrong type
    "Pulumi.bad-12-mxfp4-on-mi300x.yaml",  # hardware support
    "Pulumi.bad-17-405b-bf16-tp4-mi300x.yaml",  # memory budget
    "Pulumi.bad-20-api-key-in-plain-text.yaml",  # a secret in plain text
    "Pulumi.bad-27-duplicate-hosts.yaml",  # fleet consistency
    "Pulumi.bad-91-hf-token-env.yaml",  # a secret in a plain field
    "Pulumi.bad-98-api-key-where-name-belongs.yaml",  # a secret where its name belongs
    "Pulumi.bad-145-parity-reference-missing.yaml",  # a file the stack names, not here
]


@pytest.mark.parametrize("name", BAD_CASES, ids=[c[11:-5] for c in BAD_CASES])
def test_bad_stack_fails_preview_and_up_before_registering_anything(
    workspace: PulumiWorkspace, name: str
) -> None:
    stack = _stack_name(BAD / name)
    field, text = _expectations(BAD / name)
    shutil.copy(BAD / name, workspace.stack_file(stack))
    workspace.run(["stack", "init", stack], timeout=60)
    for key in _secrets_to_set(BAD / name):
        workspace.set_secret(stack, key, SECRETS[key])

    preview = workspace.run(["preview", "--stack", stack], check=False, timeout=300)
    assert not preview.ok
    assert f"in stack {stack} (" in preview.stdout, preview.stdout
    assert f"- {field}: " in preview.stdout, preview.stdout
    assert text in preview.stdout, preview.stdout
    assert "(hint: " in preview.stdout  # every problem says how to fix it
    assert "Traceback" not in preview.stdout

    up = workspace.up(stack, check=False)
    assert not up.ok
    assert f"- {field}: " in up.messages()
    hidden = re.search(r"^# expect-hidden: (.+)$", (BAD / name).read_text(), re.MULTILINE)
    if hidden:  # a (fake) secret in a plain field is named by path, never shown
        # (`up --json`'s prelude lists the plain config as the file holds it: Pulumi's own.)
        assert hidden.group(1).strip() not in preview.text + up.messages()
    assert set(workspace.resources(stack)) <= {f"amdfleet-{stack}"}  # nothing but the Stack


def _secrets_to_set(path: Path) -> list[str]:
    """The secrets a bad stack references but does not hold (loading it would fail)."""
    text = path.read_text()
    needed = ["apiKey", "hfToken"] if "meta-llama/" in text or "hf_token" in text else ["apiKey"]
    return [key for key in needed if f"amdfleet:{key}" not in text]


def _expectations(path: Path) -> tuple[str, str]:
    header = path.read_text()
    field = re.search(r"^# expect-path: (.+)$", header, re.MULTILINE)
    text = re.search(r"^# expect-text: (.+)$", header, re.MULTILINE)
    assert field and text, f"{path.name} lacks expect-path/expect-text lines"
    return field.group(1).strip(), text.group(1).strip()


def test_a_referenced_secret_that_is_not_set_fails_preview(workspace: PulumiWorkspace) -> None:
    shutil.copy(ROOT / "stacks/Pulumi.local.yaml", workspace.stack_file("no-key"))
    workspace.run(["stack", "init", "no-key"], timeout=60)
    preview = workspace.run(["preview", "--stack", "no-key"], check=False, timeout=300)
    assert not preview.ok
    assert "- amdfleet:apiKey: secret is referenced" in preview.stdout, preview.stdout
    assert "pulumi config set --secret apiKey" in preview.stdout


def test_up_refuses_a_placeholder_host_key_before_registering_anything(
    workspace: PulumiWorkspace,
) -> None:
    """The committed stacks pin example placeholders: preview shows them (above), up stops
    before the Fleet registers, naming the host key and how to get the real one."""
    source = ROOT / "stacks/Pulumi.mi355x-llama70b.yaml"
    stack = "placeholder-up"
    shutil.copy(source, workspace.stack_file(stack))
    workspace.run(["stack", "init", stack], timeout=60)
    for key in load_stack_file(str(source)).missing_secrets:
        workspace.set_secret(stack, key, SECRETS[key])

    up = workspace.up(stack, check=False)

    assert not up.ok
    messages = up.messages()
    assert "- fleet.hosts[0].host_key: host 'mi355x-01' is pinned to the example placeholder" in (
        messages
    ), messages
    assert "ssh-keyscan -t ed25519 " in messages and "Traceback" not in messages
    assert set(workspace.resources(stack)) <= {f"amdfleet-{stack}"}  # nothing but the Stack
    assert SECRETS["apiKey"] not in messages
