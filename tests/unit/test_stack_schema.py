"""The stack file's JSON Schema (``amdfleet schema``, committed as
``schema/stack.schema.json``), checked with a real validator (``jsonschema``).

The committed copy is what the stack models generate now (a stale copy fails with the
diff); every stack in the repository names it in its first line, the modeline
yaml-language-server reads, and validates against it. Editors must show no error that
amdfleet would not report: every committed and test stack validates, and on every bad
stack each schema error names a field that amdfleet's own error (the loader's, else the
planner's) names too. The schema-level mistakes among the bad stacks (a typo'd key, a
wrong type, a value outside an enum or a range, a secret in plain text) it rejects at the
field the bad stack expects.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from amdfleet.cli import main
from amdfleet.config import SECTIONS, load_stack_file
from amdfleet.config.json_schema import schema_text, stack_file_schema
from amdfleet.errors import ConfigError, field_path
from amdfleet.verify.reference import checked_plan
from tests.support.files import stale_diff

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SCHEMA_FILE = REPO / "schema" / "stack.schema.json"
STACK_FILES = sorted((REPO / "stacks").glob("Pulumi.*.yaml")) + sorted(
    (HERE / "stacks").glob("Pulumi.*.yaml")
)
BAD_STACKS = sorted((HERE / "bad_stacks").glob("Pulumi.bad-*.yaml"))
REGENERATE = "amdfleet schema --out schema/stack.schema.json"

# Bad stacks whose mistake is the schema's to catch, by case number.
SCHEMA_LEVEL = {
    1: "a typo'd section",
    2: "a typo'd field",
    3: "a typo'd host field",
    4: "a string where a port number belongs",
    5: "a fraction where an integer belongs",
    6: "a list where a number belongs",
    7: "a word where a boolean belongs",
    8: "an accelerator the catalog lacks",
    10: "a precision outside the enum",
    11: "an engine the catalog lacks",
    20: "the API key in plain text",
    22: "the HF token in plain text",
    39: "an environment variable name no shell exports",
    40: "a key outside the amdfleet namespace",
    45: "a memory fraction out of range",
    48: "a required section missing",
    52: "a negative prompt count",
    53: "an accuracy threshold above 1",
    54: "an accuracy task outside the enum",
    55: "a section that is not a mapping",
    83: "settings without the config: key",
    98: "an API key where its name belongs",
    117: "a fabric size in a unit all_reduce_perf lacks",
    119: "a typo'd fabric field",
    120: "a fabric variable name no shell exports",
    134: "a registry address with a scheme",
    142: "a parity share of zero",
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_what_the_models_generate() -> None:
    diff = stale_diff(SCHEMA_FILE, schema_text(stack_file_schema()), "amdfleet schema")
    assert not diff, f"the committed schema is stale; run `{REGENERATE}`:\n{diff}"


def test_every_model_field_is_described_and_no_model_takes_extra_keys() -> None:
    schema = stack_file_schema()
    models = {name: d for name, d in schema["$defs"].items() if "properties" in d}
    assert {"FleetSpec", "HostSpec", "ParitySpec", "SecureValue"} <= set(models)
    for name, model in models.items():
        assert model["additionalProperties"] is False, name
        undescribed = [f for f, s in model["properties"].items() if not s.get("description")]
        assert undescribed == [], f"{name}: {undescribed}"
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False
    assert sorted(config["properties"]) == sorted(
        f"amdfleet:{s}" for s in (*SECTIONS, "description")
    )


@pytest.mark.parametrize("path", STACK_FILES, ids=[p.name for p in STACK_FILES])
def test_stack_names_the_schema_in_its_first_line(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{path.name} starts with {first!r}, not the yaml-language-server modeline"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_FILE


@pytest.mark.parametrize("path", STACK_FILES, ids=[p.name for p in STACK_FILES])
def test_stack_validates(path: Path, validator: jsonschema.Draft202012Validator) -> None:
    load_stack_file(str(path))  # the loader accepts it: the schema must too
    errors = [_describe(e) for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def test_secrets_and_pulumi_keys_validate_as_pulumi_writes_them(
    validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    document = yaml.safe_load((REPO / "stacks" / "Pulumi.local.yaml").read_text())
    document["config"]["amdfleet:apiKey"] = {"secure": "v1:AAAAAAAAAAAAAAAA:BBBBBBBBBBBB"}
    document["config"]["amdfleet:unusedKey"] = {"secure": "v1:CCCCCCCCCCCCCCCC:DDDDDDDDDDDD"}
    document |= {
        "secretsprovider": "passphrase",
        "encryptionsalt": "v1:EEEEEEEEEEE=:v1:FFFFFFFFFFFFFFFF:GGGGGGGGGGGGGGGGGGGGGGGGGGGGGG==",
        "environment": ["team/shared"],
    }
    path = tmp_path / "Pulumi.local.yaml"
    path.write_text(yaml.safe_dump(document))
    loaded = load_stack_file(str(path))
    assert loaded.missing_secrets == ()
    assert [_describe(e) for e in validator.iter_errors(document)] == []

    plain = copy.deepcopy(document)
    plain["config"]["amdfleet:apiKey"] = "a-key-in-plain-text"
    assert _fields(validator, plain) == [{"apiKey", "amdfleet:apiKey"}]
    path.write_text(yaml.safe_dump(plain))
    with pytest.raises(ConfigError) as caught:
        load_stack_file(str(path))
    assert caught.value.paths == ("amdfleet:apiKey",)


@pytest.mark.parametrize("number", sorted(SCHEMA_LEVEL), ids=lambda n: SCHEMA_LEVEL[n])
def test_schema_rejects_schema_level_mistakes(
    number: int, validator: jsonschema.Draft202012Validator
) -> None:
    (path,) = [p for p in BAD_STACKS if p.name.startswith(f"Pulumi.bad-{number:02d}-")]
    expected = re.search(r"^# expect-path: (.+)$", path.read_text(), re.MULTILINE)
    assert expected, f"{path.name} has no expect-path line"
    fields = _fields(validator, yaml.safe_load(path.read_text()))
    assert expected.group(1).strip() in set().union(*fields), f"schema errors at {fields}"


@pytest.mark.parametrize(
    "path", BAD_STACKS, ids=[p.name.removeprefix("Pulumi.") for p in BAD_STACKS]
)
def test_schema_errors_are_errors_amdfleet_reports(
    path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        pytest.skip("not YAML: the editor's parser reports it before any schema")
    reported = set(_amdfleet_paths(path))
    unreported = [names for names in _fields(validator, document) if not names & reported]
    assert unreported == [], f"amdfleet reports only {sorted(reported)}"


def test_schema_command_prints_and_writes_the_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["schema"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == SCHEMA_FILE.read_text()
    out = tmp_path / "stack.schema.json"
    written = runner.invoke(main, ["schema", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == SCHEMA_FILE.read_text()
    assert written.stdout == ""
    helped = runner.invoke(main, ["schema", "-h"])
    assert "JSON Schema (draft 2020-12) of a stack file" in helped.output
    assert "--out" in helped.output


def test_schema_command_names_an_unwritable_out_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "stack.schema.json"
    result = CliRunner().invoke(main, ["schema", "--out", str(missing)])
    assert result.exit_code == 1
    assert f"cannot write --out {missing}" in result.output
    assert "Traceback" not in result.output


def _amdfleet_paths(path: Path) -> tuple[str, ...]:
    """The fields amdfleet's own error names: the loader's, else the planner's."""
    try:
        checked_plan(load_stack_file(str(path)).spec)
    except ConfigError as e:
        return e.paths
    return ()


def _fields(validator: jsonschema.Draft202012Validator, document: Any) -> list[set[str]]:
    """The stack fields the schema's errors name, each as the spellings amdfleet may use."""
    found = [names for error in validator.iter_errors(document) for names in _error_fields(error)]
    return sorted(found, key=sorted)


def _error_fields(error: jsonschema.ValidationError) -> Iterator[set[str]]:
    """An error's field paths: a missing or unexpected key is named itself, not its parent;
    a value matching no variant (a section, or null) where the variant it is closest to fails,
    as an editor shows it."""
    error = jsonschema.exceptions.best_match([error]) or error
    location = list(error.absolute_path)
    if error.validator == "required":
        keys = [k for k in error.validator_value if k not in error.instance]
    elif error.validator == "additionalProperties":
        keys = [k for k in error.instance if not _declared(error.schema, k)]
    else:
        keys = [None]
    for key in keys:
        yield _field_path([*location, key] if key is not None else location)


def _declared(schema: dict[str, Any], key: str) -> bool:
    patterns = schema.get("patternProperties", {})
    return key in schema.get("properties", {}) or any(re.search(p, key) for p in patterns)


def _field_path(location: list[Any]) -> set[str]:
    """``config / amdfleet:serving / port`` as ``serving.port``. Any other key of the
    namespace is a secret's place: an error inside it is about the key, which the loader
    names ``amdfleet:apiKey`` (a secret in plain text) or ``apiKey`` (an unknown key)."""
    if location[:1] != ["config"] or len(location) == 1:
        return {field_path(location) or "config"}  # the loader's name for the file itself
    top = str(location[1])
    if not top.startswith("amdfleet:"):  # a foreign key, named whole (aws:region), or by
        return {field_path(location[1:]), "config"}  # its place if it looks like a secret
    key = top.removeprefix("amdfleet:")
    if key in (*SECTIONS, "description"):
        return {field_path([key, *location[2:]])}
    return {key, top}


def _describe(error: jsonschema.ValidationError) -> str:
    return f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
