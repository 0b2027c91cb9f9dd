"""The Pulumi package schema of ``amdfleet``, generated from the providers' props models.

It is what the plugin answers to ``GetSchema`` (``pulumi package get-schema``), what SDK
generators read (``pulumi package gen-sdk``) and what a Pulumi YAML program is checked
against; ``amdfleet schema --package`` prints it (committed as
``schema/amdfleet.schema.json``).

pydantic writes each props model (:attr:`AmdFleetResource.props_model
<amdfleet.providers.resource.AmdFleetResource.props_model>`) as a JSON Schema, with the
descriptions of its fields and the docstrings of its nested models; this module says the
same in Pulumi's terms:

* each resource ``amdfleet:index:<Name>``: its class docstring; as inputs every field a
  program sets, as properties every field the provider returns (all but the secret
  inputs). A field whose description starts with ``Output`` is output-only, as is one
  ``Added by check:`` (the provider computes it). Secret inputs (``SECRET_FIELDS``) and
  secret outputs (``SECRET_OUTPUTS``) are ``secret``. ``resource_urn`` is the plugin's
  business, never a property. Property names are the fields' own (snake_case): they
  reach the provider as they are;
* a nested model (or dataclass) is an object type ``amdfleet:index:<Model>``; a
  ``Literal`` is an enum type ``amdfleet:index:<Owner><Field>`` (described as its field);
  ``dict[str, X]`` a map of X; ``list``/``tuple`` an array (of a fixed-length tuple's
  item types, which Pulumi cannot count: the field's description names the items);
  ``Any`` is ``pulumi.json#/Any``; ``X | None`` is X, not required; any other union
  ``oneOf`` its members;
* a default that is a boolean, number or string is the property's ``default``.

The components of :func:`~amdfleet.plugin.components.component_schemas` join the
resources. No ``pluginDownloadURL``: the plugin comes with amdfleet, nothing downloads it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from amdfleet.plugin.components import component_schemas
from amdfleet.plugin.registry import RESOURCES
from amdfleet.providers.progress import URN_KEY
from amdfleet.providers.resource import PACKAGE, AmdFleetResource, type_token

JsonDict = dict[str, Any]

ANY: JsonDict = {"$ref": "pulumi.json#/Any"}
PRIMITIVES = ("boolean", "integer", "number", "string")
OUTPUT_ONLY = ("Output:", "Output of refresh:", "Output of an import:", "Added by check:")
"""How the description of a field the provider sets (never a program) begins."""

DESCRIPTION = (
    "Declarative, verified LLM serving on AMD Instinct GPUs: hosts and their preflight, "
    "cloud instances, engine images, model weights, vLLM/SGLang/TGI engines on one node or "
    "several, and the verification that gates them, as Pulumi resources."
)


def package_schema(version: str) -> JsonDict:
    """The package schema of ``amdfleet`` at ``version``."""
    writer = _TypeWriter()
    resources = {type_token(r.type_name): resource_spec(r, writer) for r in RESOURCES}
    return {
        "name": PACKAGE,
        "displayName": "amdfleet",
        "version": version,
        "description": DESCRIPTION,
        "keywords": [
            "pulumi",
            "amd",
            "rocm",
            "instinct",
            "vllm",
            "sglang",
            "llm",
            "category/infrastructure",
        ],
        "license": "Apache-2.0",
        "language": {
            "python": {
                "packageName": "pulumi_amdfleet",
                "requires": {"pulumi": ">=3.0.0,<4.0.0"},
                "respectSchemaVersion": True,
            },
            "nodejs": {"packageName": "@amdfleet/pulumi", "respectSchemaVersion": True},
        },
        "config": {},
        "provider": {
            "description": "The amdfleet provider (the plugin pulumi-resource-amdfleet, "
            "installed with amdfleet); it takes no configuration."
        },
        "types": dict(sorted(writer.types.items())),
        "resources": {**resources, **component_schemas()},
    }


def resource_spec(resource: type[AmdFleetResource], writer: _TypeWriter) -> JsonDict:
    """The schema of one resource; ``writer`` collects the types it uses."""
    model = resource.props_model
    schema = model.model_json_schema()
    writer.defs.update(schema.get("$defs", {}))
    fields = {k: v for k, v in schema["properties"].items() if k != URN_KEY}
    inputs = [k for k, v in fields.items() if not v.get("description", "").startswith(OUTPUT_ONLY)]
    outputs = [k for k in fields if k not in model.SECRET_FIELDS]
    secret = {*model.SECRET_FIELDS, *model.SECRET_OUTPUTS}

    def prop(name: str, *, default: bool) -> JsonDict:
        spec = writer.property(fields[name], resource.type_name, name, default=default)
        return {**spec, "secret": True} if name in secret else spec

    spec = {
        "description": markdown(inspect.getdoc(resource) or ""),
        "inputProperties": {k: prop(k, default=True) for k in inputs},
        "requiredInputs": [k for k in schema.get("required", []) if k in inputs],
        "properties": {k: prop(k, default=False) for k in outputs},
        "required": [k for k in outputs if not _nullable(fields[k])],
    }
    return {k: v for k, v in spec.items() if v}  # as Pulumi writes it: no empty list


def markdown(text: str) -> str:
    """A docstring or field description as schema Markdown: reST roles and double
    backquotes as code, wrapped lines joined (paragraphs kept)."""
    text = _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text.replace("``", "`"))
    return text.strip()


_ROLE = re.compile(r":[\w:]+:`(~?)([^`<]+?)(?:\s*<[^>]*>)?`")


class _TypeWriter:
    """Turns the props models' JSON Schemas into Pulumi type specs, collecting the object
    and enum types they name in ``types``."""

    def __init__(self) -> None:
        self.defs: JsonDict = {}
        """The nested models' JSON Schemas by name (pydantic's ``$defs``)."""
        self.types: JsonDict = {}
        self._sources: JsonDict = {}

    def _claim(self, token: str, source: Any) -> bool:
        """Whether ``token`` is new; a second type of that name must be the same type."""
        if token not in self._sources:
            self._sources[token] = source
            return True
        if self._sources[token] != source:
            raise ValueError(f"two different types are named {token}: rename one of them")
        return False

    def property(self, schema: JsonDict, owner: str, name: str, *, default: bool) -> JsonDict:
        """A property spec: its type, description and (``default``) default value."""
        description = markdown(schema.get("description", ""))
        spec = self.type(schema, owner + _pascal(name), description)
        spec["description"] = description
        value = schema.get("default")
        if default and isinstance(value, bool | int | float | str):
            spec["default"] = value
        return spec

    def type(self, schema: JsonDict, name: str, about: str) -> JsonDict:
        """The type spec of ``schema``; ``name`` names the enum type it may need, which
        ``about`` (the field's description) describes."""
        schema = _without_null(schema)
        if "$ref" in schema:
            return self.object(schema["$ref"].rsplit("/", 1)[-1])
        if "enum" in schema or "const" in schema:
            return self.enum(name, schema.get("enum", [schema.get("const")]), about)
        if "anyOf" in schema:
            members = [self.type(s, name, about) for s in schema["anyOf"]]
            unique = [m for i, m in enumerate(members) if m not in members[:i]]
            return unique[0] if len(unique) == 1 else {"oneOf": unique}
        kind = schema.get("type")
        if kind == "array":
            items = schema.get("items") or {"anyOf": schema.get("prefixItems") or [{}]}
            return {"type": "array", "items": self.type(items, name + "Item", about)}
        if kind == "object":
            values = schema.get("additionalProperties", True)
            return {"type": "object", "additionalProperties": self._values(values, name, about)}
        if kind in PRIMITIVES:
            return {"type": kind}
        if not schema:
            return dict(ANY)
        raise TypeError(f"{name}: no Pulumi type for the JSON Schema {schema}")

    def object(self, model: str) -> JsonDict:
        """A ``$ref`` to the object type of the nested model ``model``."""
        token, schema = type_token(model), self.defs[model]
        if self._claim(token, schema):  # claimed before its fields: a cycle ends here
            props = schema.get("properties", {})
            self.types[token] = {
                "description": markdown(schema.get("description", "")),
                "type": "object",
                "properties": {
                    k: self.property(v, model, k, default=True) for k, v in props.items()
                },
            }
            if schema.get("required"):
                self.types[token]["required"] = list(schema["required"])
        return {"$ref": f"#/types/{token}"}

    def enum(self, name: str, values: list[Any], about: str) -> JsonDict:
        """A ``$ref`` to the enum type ``name`` of ``values``."""
        kinds = {_primitive(v) for v in values}
        if len(kinds) != 1:
            raise TypeError(f"{name}: an enum of mixed types {values}")
        token = type_token(name)
        if self._claim(token, values):
            self.types[token] = {
                "description": about or f"One of {', '.join(map(repr, values))}.",
                "type": kinds.pop(),
                "enum": [{"value": v} for v in values],
            }
        return {"$ref": f"#/types/{token}"}

    def _values(self, values: Any, name: str, about: str) -> JsonDict:
        return dict(ANY) if values is True else self.type(values, name + "Value", about)


def _without_null(schema: JsonDict) -> JsonDict:
    """``schema`` without its ``null`` alternative (every Pulumi value may be absent)."""
    if "anyOf" not in schema:
        return schema
    rest = [s for s in schema["anyOf"] if s.get("type") != "null"]
    return rest[0] if len(rest) == 1 else {"anyOf": rest}


def _nullable(schema: JsonDict) -> bool:
    return any(s.get("type") == "null" for s in schema.get("anyOf", []))


def _primitive(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "number" if isinstance(value, float) else "string"


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))
