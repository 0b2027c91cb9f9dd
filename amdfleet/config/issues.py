"""Pydantic validation errors of a stack as :class:`~amdfleet.errors.ConfigIssue` s:
the field path, the message without pydantic's prefix, and a hint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from amdfleet import secretscan
from amdfleet.config.image_build import HOST_NAME_TAG, SSH_HOST_TAG
from amdfleet.config.stack import StackSpec
from amdfleet.errors import ConfigIssue, field_path, unknown_key_issue


def stack_issues(error: ValidationError, data: Mapping[str, Any]) -> list[ConfigIssue]:
    """The issues of a failed :class:`StackSpec` validation of ``data``, in pydantic's order."""
    issues = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in _UNION_TAGS)
        path = field_path(loc)
        if item["type"] == "extra_forbidden":
            parent_model = _model_at(loc[:-1], data)
            valid = list(parent_model.model_fields) if parent_model else []
            issues.append(unknown_key_issue(str(loc[-1]), valid, loc[:-1]))
            continue
        message, _, fix = item["msg"].removeprefix("Value error, ").partition(" — ")
        value = item.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        if fix or secretscan.describe(str(value)) or path.endswith("_secret"):
            shown = ""  # a *_secret field names a secret: what was typed there may be one
        if path.endswith("_secret") and item["type"] == "string_pattern_mismatch":
            message = "must be the name of a secret config key, not its value"
            fix = (
                "put a key name here (letters, digits, _) and set the value with "
                "`pulumi config set --secret KEY` (it prompts, or reads stdin)"
            )
        issues.append(ConfigIssue(path or "stack", message + shown, fix or hint_for(item)))
    return issues


_UNION_TAGS = (HOST_NAME_TAG, SSH_HOST_TAG)


def _model_at(loc: tuple[Any, ...], data: Mapping[str, Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = StackSpec
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = inner_model(field.annotation)
    return model


def inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = inner_model(arg)
        if found is not None:
            return found
    return None


def hint_for(item: Mapping[str, Any]) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    if kind == "literal_error":
        return f"use one of {ctx.get('expected', '')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "use a whole number"
    if kind in ("float_parsing", "float_type"):
        return "use a number"
    if kind in ("bool_parsing", "bool_type"):
        return "use true or false"
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"use a value {bounds[kind]} {limit}"
    if kind == "string_pattern_mismatch":
        return f"it must match {ctx.get('pattern', '')}"
    if kind == "missing":
        return "add this key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "write a mapping (key: value lines) here"
    if kind in ("list_type", "tuple_type"):
        return "write a list here"
    if kind in ("string_type", "str_type"):
        return "write a string here"
    return "see the field's description in amdfleet/config/"
