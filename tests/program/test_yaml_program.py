"""A Pulumi YAML program declares amdfleet's ``Deployment`` component and deploys the
``local`` stack for real: the real CLI, Pulumi's YAML language host (built by
``scripts/install-pulumi``), the plugin's ``construct`` in this repository's
``pulumi-resource-amdfleet``, vLLM's CPU build serving SmolLM2 and its verification gate;
then ``pulumi destroy`` leaves nothing.

The project lives outside the repository and is a user's: a ``Pulumi.yaml`` with
``runtime: yaml``, the plugin entry pointing at the repository's virtualenv, the API key
as secret config. It gives the component the committed ``local`` stack's sections under
``config`` (as a user copies a stack into a program), on a free port, so it never meets
another deployment of ``local`` on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.vllm_server import missing_parts
from tests.support.local_stack import assert_answers_paris, local_config, quick_verification
from tests.support.ports import free_port
from tests.support.prerequisites import require_language_host
from tests.support.pulumi_cli import REPO_ROOT, PulumiWorkspace

API_KEY = "yaml-key-5be1c07a93"
STACK = "yaml-local"
COMPONENT = "amdfleet:index:Deployment"


@pytest.mark.pulumi
def test_a_bad_stack_in_a_yaml_program_fails_with_amdfleets_error(tmp_path: Path) -> None:
    """The component validates its stack before registering anything: a preview stops at
    the field, with amdfleet's message and no Python traceback."""
    sections = _sections(free_port())
    sections["topology"] = {**sections["topology"], "nodes": "two"}
    ws = _workspace(tmp_path, sections)
    run = ws.preview(STACK, check=False)
    assert not run.ok
    message = run.messages()
    assert "amdfleet.errors.ConfigError: invalid stack configuration in Deployment llm" in message
    assert "topology.nodes: Input should be a valid integer" in message and "'two'" in message
    assert "Traceback" not in message and 'File "' not in message, message
    assert ws.resources(STACK) == {}


@pytest.mark.pulumi
@pytest.mark.vllm
@pytest.mark.slow
def test_a_yaml_program_deploys_local_answers_and_destroys(tmp_path: Path) -> None:
    absent = missing_parts()
    if absent:
        pytest.fail(f"the local stack needs {', '.join(absent)}; run scripts/setup")
    port = free_port()
    ws = _workspace(tmp_path, _sections(port))
    try:
        run = ws.up(STACK)
        state = ws.resources(STACK)
        outputs = ws.outputs(STACK)
        assert outputs["apiKey"] == "[secret]"  # shown only on request
        assert ws.outputs(STACK, show_secrets=True)["apiKey"] == API_KEY
        assert outputs["ready"] is True
        assert outputs["endpoint"] == f"http://127.0.0.1:{port}/v1"
        assert outputs["model"] == "smollm2-135m-instruct"
        assert outputs["verification"]["parity"]["share"] >= 0.75  # the stack's gate, passed
        # The component, and under it the very resources the Python program makes.
        component = state["llm"]
        assert component["type"] == COMPONENT and component.get("custom") is not True
        custom = {
            name: r["type"]
            for name, r in state.items()
            if r.get("custom") and not r["type"].startswith("pulumi:providers:")
        }
        assert custom["deployment-engine-localhost"] == "amdfleet:index:EngineService"
        assert custom["deployment-verification"] == "amdfleet:index:Verification"
        assert custom["fleet-localhost"] == "amdfleet:index:SshHost"
        assert all(t.startswith("amdfleet:index:") for t in custom.values()), custom
        assert all(_under(state, name, "llm") for name in custom), custom
        assert set(run.changed().values()) == {"create"}
        assert API_KEY not in run.text and API_KEY not in ws.backend_text()
        assert_answers_paris(outputs["endpoint"], API_KEY, outputs["model"])
    finally:
        ws.destroy(STACK)
    assert ws.resources(STACK) == {}
    assert not Path(f"/opt/amdfleet/{STACK}").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def _workspace(root: Path, sections: dict[str, Any]) -> PulumiWorkspace:
    """A user's YAML project in ``root`` deploying ``sections``, its stack made and its
    API key set as secret config."""
    require_language_host("yaml")
    ws = PulumiWorkspace(root)
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(_program(sections), sort_keys=False))
    ws.run(["stack", "init", STACK], timeout=60)
    ws.set_secret(STACK, "apiKey", API_KEY)
    return ws


def _sections(port: int) -> dict[str, Any]:
    """The ``local`` stack's sections, served on ``port``, with a quick verification."""
    sections = {key.removeprefix("amdfleet:"): value for key, value in local_config().items()}
    sections["serving"] = {**sections["serving"], "port": port}
    sections["verification"] = quick_verification(sections["verification"])
    return sections


def _program(sections: dict[str, Any]) -> dict[str, Any]:
    """The user's Pulumi.yaml: a Deployment of ``sections``, its outputs exported."""
    return {
        "name": "llm",
        "runtime": "yaml",
        "plugins": {"providers": [{"name": "amdfleet", "path": str(REPO_ROOT / ".venv" / "bin")}]},
        "config": {"apiKey": {"type": "string", "secret": True}},
        "resources": {
            "llm": {
                "type": COMPONENT,
                "properties": {"config": sections, "secrets": {"apiKey": "${apiKey}"}},
            }
        },
        "outputs": {
            "endpoint": "${llm.endpoint}",
            "model": "${llm.model}",
            "apiKey": "${llm.apiKey}",
            "ready": "${llm.ready}",
            "verification": "${llm.verification}",
        },
    }


def _under(state: dict[str, dict[str, Any]], name: str, ancestor: str) -> bool:
    """Whether resource ``name`` has ``ancestor`` among its parents."""
    urns = {r["urn"]: n for n, r in state.items()}
    parent = state[name].get("parent")
    while parent in urns:
        if urns[parent] == ancestor:
            return True
        parent = state[urns[parent]].get("parent")
    return False
