"""The package's Deployment component (amdfleet/plugin/components.py): its inputs are
validated as a Python program's stack is (the same field-naming errors), and its schema
says what a program in another language gives and gets, secrets marked."""

from __future__ import annotations

from typing import Any

import pytest

from amdfleet.config import load_from_values
from amdfleet.errors import ConfigError
from amdfleet.plugin.components import DEPLOYMENT, component_schemas, load_deployment
from tests.support.local_stack import local_config

SECRETS = {"apiKey": "key-0f3e"}


def _sections() -> dict[str, Any]:
    return {key.removeprefix("amdfleet:"): value for key, value in local_config().items()}


def _error(inputs: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_deployment("llm", inputs, "dev")
    return str(caught.value)


def test_the_local_stack_loads_by_name_and_by_its_sections() -> None:
    by_name = load_deployment("llm", {"stack": "local", "secrets": SECRETS}, "dev")
    by_sections = load_deployment("llm", {"config": _sections(), "secrets": SECRETS}, "dev")
    assert by_name.name == "local" and by_sections.name == "dev"
    assert by_sections.model_dump(exclude={"name"}) == by_name.model_dump(exclude={"name"})
    assert by_name.secret_keys == ("apiKey",)


def test_a_bad_stack_gets_the_python_programs_field_naming_error() -> None:
    sections = _sections()
    sections["topology"] = {**sections["topology"], "nodes": "two"}
    message = _error({"config": sections, "secrets": SECRETS})
    assert "topology.nodes" in message and "'two'" in message
    with pytest.raises(ConfigError) as program:  # what a Python program of it reports
        load_from_values("dev", sections, {"apiKey"}, "Deployment llm")
    assert message == str(program.value)


def test_a_secret_in_the_plain_sections_is_refused_and_never_echoed() -> None:
    message = _error({"config": {**_sections(), "apiKey": "sk-plain-9d2"}, "secrets": {}})
    assert "amdfleet:apiKey: secret is stored in plain text" in message
    assert "sk-plain-9d2" not in message


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"stack": "local"}, "secrets.apiKey: not set"),
        ({"config": _sections()}, "amdfleet:apiKey: secret is referenced by the stack but not set"),
        ({"stack": "nosuch", "secrets": SECRETS}, "known stacks: "),
        ({"secrets": SECRETS}, "stack: give either stack or config"),
        ({"stack": "local", "config": {}, "secrets": SECRETS}, "give either stack or config"),
        (
            {"stacks": "local", "secrets": SECRETS},
            "stacks: unknown key (hint: did you mean 'stack'?)",
        ),
        ({"stack": ["local"], "secrets": SECRETS}, "stack: a list, not a text"),
        ({"config": "local", "secrets": SECRETS}, "config: a str, not an object"),
        ({"stack": "local", "secrets": ["key"]}, "secrets: a list, not an object"),
    ],
)
def test_bad_inputs_name_the_input_and_what_would_be_valid(
    inputs: dict[str, Any], expected: str
) -> None:
    assert expected in _error(inputs)


def test_the_schema_marks_secrets_and_describes_every_property() -> None:
    schema = component_schemas()[DEPLOYMENT]
    assert schema["isComponent"] is True
    inputs, outputs = schema["inputProperties"], schema["properties"]
    assert set(inputs) == {"stack", "config", "secrets"}
    assert inputs["secrets"]["secret"] is True  # the whole map (Pulumi marks properties)
    assert outputs["apiKey"]["secret"] is True
    assert {"endpoint", "model", "apiKey", "ready", "verification", "verifiedAt"} <= set(outputs)
    assert all(p.get("description") for p in (*inputs.values(), *outputs.values()))
    assert set(schema["required"]) <= set(outputs)
