"""``__main__.py`` as the engine runs it, in preview: the resource graph, parents, outputs.

The program runs under the SDK's mocks with the test driver as resource monitor; every
dynamic resource goes through the real dynamic-provider host, but a preview only calls
Check and Diff, so no host is contacted (the stack's hosts are documentation addresses).
A bad stack must fail before any resource is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.support.program_driver import ProgramDriver
from tests.support.pulumi_host import secret

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
DriverFactory = Callable[..., ProgramDriver]
API_KEY = "api-key-for-preview"


def stack_config(path: Path, **secrets: str) -> dict[str, Any]:
    """A stack file's config as the engine passes it, plus secret values."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())["config"]
    config.update({f"amdfleet:{k}": secret(v) for k, v in secrets.items()})
    return config


def _by_type(urns: list[str]) -> dict[str, list[str]]:
    """Resource names grouped by their qualified type (parent types joined with '$')."""
    grouped: dict[str, list[str]] = {}
    for urn in urns:
        _, _, qualified_type, name = urn.split("::", 3)
        grouped.setdefault(qualified_type, []).append(name)
    return grouped


def test_two_node_graph_parents_and_outputs(program_driver: DriverFactory) -> None:
    config = stack_config(
        ROOT / "stacks/Pulumi.mi300x-2node-llama405b-bf16.yaml", apiKey=API_KEY, hfToken="hf_x"
    )
    driver = program_driver(stack="mi300x-2node-llama405b-bf16", config=config)
    result = driver.preview(MAIN)
    inverse = _by_type(result.urns("create"))
    fleet = "amdfleet:index:Fleet"
    deploy = "amdfleet:index:Deployment"
    dyn = "pulumi-python:dynamic/amdfleet"
    assert sorted(inverse[f"{fleet}${dyn}:SshHost"]) == ["fleet-mi300x-a", "fleet-mi300x-b"]
    assert sorted(inverse[f"{deploy}${dyn}:EngineImage"]) == [
        "deployment-image-mi300x-a",
        "deployment-image-mi300x-b",
    ]
    assert len(inverse[f"{deploy}${dyn}:ModelWeights"]) == 2
    assert sorted(inverse[f"{deploy}${dyn}:EngineService"]) == [
        "deployment-engine-mi300x-a",
        "deployment-engine-mi300x-b",
    ]
    assert inverse[f"{deploy}${dyn}:Verification"] == ["deployment-verification"]
    assert len(inverse) == 5  # nothing else is registered, and nothing without a parent

    assert result.outputs["endpoint"] == "http://192.0.2.40:8000/v1"
    assert result.outputs["model"] == "meta-llama/Llama-3.1-405B-Instruct"
    assert "api_key" in result.secret_outputs
    assert result.outputs["api_key"] == API_KEY
    assert "endpoint" not in result.secret_outputs


def test_local_stack_graph_has_no_image(program_driver: DriverFactory) -> None:
    config = stack_config(ROOT / "stacks/Pulumi.local.yaml", apiKey=API_KEY)
    result = program_driver(stack="local", config=config).preview(MAIN)
    kinds = [urn.split("::")[2].rsplit(":", 1)[-1] for urn in result.urns("create")]
    assert "EngineImage" not in kinds
    assert kinds.count("SshHost") == kinds.count("EngineService") == 1
    assert result.outputs["endpoint"] == "http://127.0.0.1:18000/v1"


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        ({"amdfleet:parallelism": {"tp": 4}}, "tp × pp × dp"),
        ({"amdfleet:servng": {"port": 1}}, "did you mean 'serving'"),
        ({"amdfleet:model": {"id": "llama-3.3-70b-instruct", "precision": "mxfp4"}}, "gfx950"),
    ],
)
def test_bad_config_is_rejected_before_any_resource(
    program_driver: DriverFactory, mutation: dict[str, Any], expected: str
) -> None:
    config = stack_config(ROOT / "stacks/Pulumi.local.yaml", apiKey=API_KEY)
    config.update(mutation)
    driver = program_driver(stack="local", config=config)
    with pytest.raises(pulumi.RunError, match=expected):
        driver.up(MAIN)
    assert driver.state == {}


def test_missing_secret_is_rejected_before_any_resource(program_driver: DriverFactory) -> None:
    config = stack_config(ROOT / "stacks/Pulumi.local.yaml")  # no apiKey
    driver = program_driver(stack="local", config=config)
    with pytest.raises(pulumi.RunError, match=r"amdfleet:apiKey: secret is referenced"):
        driver.up(MAIN)
    assert driver.state == {}
