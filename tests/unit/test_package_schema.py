"""The Pulumi package schema of ``amdfleet`` (amdfleet/plugin/schema.py), committed as
``schema/amdfleet.schema.json``.

It is generated from the providers' props models: every registered resource is there with
every field of its model, secrets are marked, everything is described, and it validates
against Pulumi's own metaschema (``pulumi_package_metaschema.json``: ``pkg/codegen/schema/
pulumi.json`` of github.com/pulumi/pulumi at v3.274.1, the CLI version amdfleet pins,
Apache-2.0, unchanged). tests/program/test_generated_sdk.py takes it through the real CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pulumi.runtime import rpc
from pydantic import Field, create_model

from amdfleet.cli import main
from amdfleet.config.json_schema import schema_text
from amdfleet.plugin import schema as package
from amdfleet.plugin.provider import version
from amdfleet.plugin.registry import RESOURCES
from amdfleet.providers.engine_cluster import EngineClusterProvider
from amdfleet.providers.engine_service import EngineServiceProvider
from amdfleet.providers.props import ProviderProps
from amdfleet.providers.resource import AmdFleetResource, type_token
from tests.support.files import stale_diff

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SCHEMA_FILE = REPO / "schema" / "amdfleet.schema.json"
METASCHEMA = HERE / "pulumi_package_metaschema.json"
REGENERATE = "amdfleet schema --package --out schema/amdfleet.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return package.package_schema(version())


def test_committed_schema_is_what_the_models_generate(schema: dict[str, Any]) -> None:
    diff = stale_diff(SCHEMA_FILE, schema_text(schema), "amdfleet schema --package")
    assert not diff, f"the committed package schema is stale; run `{REGENERATE}`:\n{diff}"


def test_schema_validates_against_pulumis_metaschema(schema: dict[str, Any]) -> None:
    # The metaschema writes named groups as ECMA-262 does, (?<name>...); Python's re
    # spells them (?P<name>...).
    meta = json.loads(re.sub(r"\(\?<(\w+)>", r"(?P<\1>", METASCHEMA.read_text()))
    jsonschema.Draft202012Validator.check_schema(meta)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(meta).iter_errors(schema)
    ]
    assert errors == []
    assert schema["name"] == "amdfleet" and schema["version"] == version()
    assert "pluginDownloadURL" not in schema  # nothing may download the plugin


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.type_name)
def test_every_field_of_the_props_model_is_in_the_schema(
    resource: type[AmdFleetResource], schema: dict[str, Any]
) -> None:
    spec = schema["resources"][type_token(resource.type_name)]
    model = resource.props_model
    fields = set(model.model_fields) - {"resource_urn"}
    inputs, outputs = set(spec["inputProperties"]), set(spec["properties"])
    assert inputs | outputs == fields
    assert "resource_urn" not in inputs | outputs
    output_only = {f for f in fields if _output_only(model, f)}
    assert inputs == fields - output_only
    assert outputs == fields - set(model.SECRET_FIELDS)  # what the provider returns
    required = {f for f, info in model.model_fields.items() if info.is_required()}
    assert set(spec.get("requiredInputs", [])) == required
    assert set(spec.get("required", [])) <= outputs
    defaults = {k: v["default"] for k, v in spec["inputProperties"].items() if "default" in v}
    assert defaults == {
        k: info.default
        for k, info in model.model_fields.items()
        if k in inputs and isinstance(info.default, bool | int | float | str)
    }


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.type_name)
def test_secrets_are_marked_secret_and_only_they(
    resource: type[AmdFleetResource], schema: dict[str, Any]
) -> None:
    spec = schema["resources"][type_token(resource.type_name)]
    model = resource.props_model
    secret = {*model.SECRET_FIELDS, *model.SECRET_OUTPUTS}
    for where in ("inputProperties", "properties"):
        marked = {k for k, v in spec[where].items() if v.get("secret")}
        assert marked == secret & set(spec[where]), where
    for name in model.SECRET_FIELDS:
        assert spec["inputProperties"][name]["secret"] is True
        assert name not in spec["properties"]  # never an output


def test_every_secret_field_is_declared() -> None:
    """A field described as a secret is a secret input of its model."""
    for resource in RESOURCES:
        model = resource.props_model
        described = {
            k
            for k, info in model.model_fields.items()
            if (info.description or "").startswith("Secret:")
        }
        assert described == set(model.SECRET_FIELDS), resource.type_name


@pytest.mark.parametrize(
    "provider", [EngineServiceProvider, EngineClusterProvider], ids=lambda p: p.__name__
)
def test_secret_outputs_are_the_values_the_provider_makes_secret(provider: type) -> None:
    """``SECRET_OUTPUTS`` is what the provider itself wraps as a secret (``check`` adds
    the fingerprint of the secret environment), so the schema marks what is secret."""
    resource = next(r for r in RESOURCES if r.provider_class is provider)
    news = {"secret_env": {"HF_TOKEN": "hf_not_a_real_token"}, "files": {}, "nodes": []}
    inputs = provider().check({}, news).inputs
    wrapped = {k for k, v in inputs.items() if rpc.is_rpc_secret(v)}
    assert wrapped == set(resource.props_model.SECRET_OUTPUTS) == {"secrets_hash"}


def test_everything_is_described(schema: dict[str, Any]) -> None:
    undescribed = [
        where for where, spec in _described_things(schema) if not spec.get("description")
    ]
    assert undescribed == []
    text = json.dumps(schema)
    assert "``" not in text and ":class:" not in text and ":func:" not in text


def test_every_type_reference_resolves(schema: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema)))
    local = {r.removeprefix("#/types/") for r in refs if r.startswith("#/types/")}
    assert local == set(schema["types"])  # every type used, none dangling
    assert refs - {f"#/types/{t}" for t in local} == {"pulumi.json#/Any"}
    assert not set(schema["types"]) & set(schema["resources"])


def test_nested_models_literals_maps_and_defaults(schema: dict[str, Any]) -> None:
    types, resources = schema["types"], schema["resources"]
    host = types["amdfleet:index:HostTarget"]
    assert host["description"].startswith("One host's connection data.")
    assert host["required"] == ["name"]
    assert host["properties"]["port"] == {
        "type": "integer",
        "description": "SSH port.",
        "default": 22,
    }
    assert host["properties"]["connection"]["$ref"] == "#/types/amdfleet:index:HostTargetConnection"
    assert host["properties"]["connection"]["default"] == "ssh"
    connection = types["amdfleet:index:HostTargetConnection"]
    assert connection["type"] == "string"
    assert [v["value"] for v in connection["enum"]] == ["ssh", "local"]
    requirement = types["amdfleet:index:HostRequirement"]  # a dataclass, not a model
    assert (
        requirement["properties"]["gpu_count"]["description"] == "The minimum number of such GPUs."
    )

    ssh = resources["amdfleet:index:SshHost"]
    assert ssh["description"].startswith("A fleet host;")
    assert ssh["properties"]["facts"]["additionalProperties"] == {"$ref": "pulumi.json#/Any"}
    assert "facts" not in ssh["inputProperties"]
    cloud = resources["amdfleet:index:CloudInstance"]
    assert cloud["inputProperties"]["boot_timeout_s"]["default"] == 900.0
    assert cloud["inputProperties"]["tags"]["items"] == {"type": "string"}
    check = resources["amdfleet:index:ClusterCheck"]
    assert check["properties"]["interfaces"]["additionalProperties"] == {"type": "string"}
    gate = resources["amdfleet:index:ReadinessGate"]
    assert gate["inputProperties"]["failures"]["items"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    engine = resources["amdfleet:index:EngineService"]
    assert engine["properties"]["secrets_hash"]["secret"] is True
    assert "secrets_hash" not in engine["inputProperties"]  # added by check
    assert "not_ready" not in engine["inputProperties"]


def test_two_different_types_of_one_name_are_refused() -> None:
    """Nested models are named by their class: two different ones of one name would be
    one type in the schema, so the generator refuses them."""

    def resource_with_twin(field: str) -> type[AmdFleetResource]:
        twin = create_model("Twin", **{field: (str, Field(description="A field."))})
        props = create_model("TwinProps", __base__=ProviderProps, twin=(twin, ...))

        class TwinResource(AmdFleetResource, name="Twin", provider=object, props=props):
            """A resource for this test."""

        return TwinResource

    writer = package._TypeWriter()
    package.resource_spec(resource_with_twin("left"), writer)
    package.resource_spec(resource_with_twin("left"), writer)  # the same type again: fine
    with pytest.raises(ValueError, match="two different types are named amdfleet:index:Twin"):
        package.resource_spec(resource_with_twin("right"), writer)


def test_components_join_the_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    component = {"isComponent": True, "description": "A test component."}
    token = type_token("TestComponent")
    monkeypatch.setattr(package, "component_schemas", lambda: {token: component})
    assert package.package_schema("1.2.3")["resources"][token] == component


def test_schema_command_prints_and_writes_the_package_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["schema", "--package"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == SCHEMA_FILE.read_text()
    out = tmp_path / "amdfleet.schema.json"
    written = runner.invoke(main, ["schema", "--package", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == SCHEMA_FILE.read_text()
    helped = runner.invoke(main, ["schema", "-h"])
    assert "--package" in helped.output


def _output_only(model: type[ProviderProps], name: str) -> bool:
    description = model.model_fields[name].description or ""
    return description.startswith(
        ("Output:", "Output of refresh:", "Output of an import:", "Added by check:")
    )


def _described_things(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for token, spec in schema["resources"].items():
        yield token, spec
        for where in ("inputProperties", "properties"):
            for name, prop in spec.get(where, {}).items():
                yield f"{token}.{where}.{name}", prop
    for token, spec in schema["types"].items():
        yield token, spec
        for name, prop in spec.get("properties", {}).items():
            yield f"{token}.{name}", prop
