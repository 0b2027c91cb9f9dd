"""The stack schema and the stack-file loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from amdfleet.config import SECTIONS, StackSpec, load_stack_file, parse_stack, stack_names
from amdfleet.errors import ConfigError

STACKS = Path(__file__).resolve().parents[2] / "stacks"

SEED_STACKS = {
    "mi355x-llama70b",
    "mi355x-llama70b-mxfp4",
    "mi325x-llama405b-fp8",
    "mi300x-llama405b-vllm",
    "mi300x-llama405b-tgi",
    "mi300x-llama405b-sglang",
    "mi300x-2node-llama405b-bf16",
    "local",
    "local-pp2",
}
CLOUD_STACKS = {"do-mi300x-llama70b", "vultr-mi355x-llama70b", "hotaisle-mi300x-llama405b"}


def test_every_seed_and_cloud_has_its_stack() -> None:
    assert set(stack_names()) == SEED_STACKS | CLOUD_STACKS


@pytest.mark.parametrize("name", sorted(SEED_STACKS | CLOUD_STACKS))
def test_committed_stacks_load_and_hold_no_secret(name: str) -> None:
    loaded = load_stack_file(name)
    assert loaded.spec.name == name
    assert loaded.spec.description
    raw = yaml.safe_load((STACKS / f"Pulumi.{name}.yaml").read_text())["config"]
    for key in loaded.spec.secret_keys:
        assert f"amdfleet:{key}" not in raw  # set by the user with --secret, never committed
    assert loaded.missing_secrets == loaded.spec.secret_keys


def test_every_field_is_documented() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            annotation = field.annotation
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                inner = getattr(candidate, "__args__", (candidate,))
                for sub in (candidate, *inner):
                    if isinstance(sub, type) and hasattr(sub, "model_fields") and sub is not model:
                        missing += walk(sub)
        return missing

    assert walk(StackSpec) == []


def test_models_are_frozen() -> None:
    spec = load_stack_file("local").spec
    port = spec.serving.port
    with pytest.raises(ValidationError, match="frozen_instance"):
        spec.serving.port = 1  # type: ignore[misc]
    assert spec.serving.port == port != 1


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack(
            "t",
            {
                "fleet": {"hosts": [{"name": "h", "connection": "local"}]},
                "topology": {"accelerator": "mi300x", "nodes": "two"},
                "model": {"id": "x", "precison": "fp8"},
                "servng": {},
            },
        )
    assert set(caught.value.paths) == {"servng", "topology.nodes", "model.precison"}
    assert "did you mean 'precision'" in str(caught.value)


def test_secure_values_count_as_set_and_are_never_read(tmp_path: Path) -> None:
    document = yaml.safe_load((STACKS / "Pulumi.local.yaml").read_text())
    document["config"]["amdfleet:apiKey"] = {"secure": "v1:AAAA:not-decrypted"}
    path = tmp_path / "Pulumi.with-secret.yaml"
    path.write_text(yaml.safe_dump(document))
    loaded = load_stack_file(str(path))
    assert loaded.missing_secrets == ()
    assert "not-decrypted" not in loaded.model_dump_json()


def test_unknown_stack_name_lists_known_ones() -> None:
    with pytest.raises(
        ConfigError, match="known stacks: do-mi300x-llama70b, hotaisle-mi300x-llama405b, local"
    ):
        load_stack_file("no-such-stack")


def test_sections_match_the_schema() -> None:
    assert set(SECTIONS) == set(StackSpec.model_fields) - {"name", "description"}
