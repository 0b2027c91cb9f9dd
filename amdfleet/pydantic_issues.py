"""Pydantic validation errors as :class:`~amdfleet.findings.Finding` s: one translator
for the stack schema, the campaign file and the providers' props.

Each issue names the field path (``fleet.hosts[0].address``); an unknown key gets the
closest valid one. For what a user writes (a stack, a campaign), the message loses
pydantic's ``Value error,`` prefix, a validator's ``what — how to fix`` text is split into
message and hint, and any other error gets a hint by its kind. Props are built by the
program, not written by a user: their issues keep pydantic's message and have no hint.
A value is echoed (``(got 'x')``) only when it is a plain value that cannot be a secret.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from amdfleet.errors import field_path, unknown_key_issue
from amdfleet.findings import Finding, config_issue

Conceal = Callable[[tuple[Any, ...], Any], bool]
"""``conceal(loc, value)``: whether the value at ``loc`` may be a secret (never echoed)."""

_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


def validation_issues(
    error: ValidationError,
    root: type[BaseModel],
    *,
    where: str,
    described_in: str | None = None,
    conceal: Conceal | None = None,
    tags: tuple[str, ...] = (),
) -> list[Finding]:
    """The issues of a failed validation of ``root``, in pydantic's order.

    ``where`` is the path of an error about the whole document. ``described_in`` names
    the file whose field descriptions the fallback hint points to (``amdfleet/config/``);
    None keeps pydantic's messages as they are, without hints (props). ``conceal`` says
    which values are not echoed; ``tags`` are union variant tags dropped from paths.
    """
    issues = []
    for item in _reported(error, annotated=described_in is not None):
        loc = tuple(part for part in item["loc"] if part not in tags)
        if item["type"] in _UNKNOWN_KEY:
            valid = fields_at(root, loc[:-1])
            issues.append(unknown_key_issue(str(loc[-1]), valid, loc[:-1]))
            continue
        hidden = conceal is not None and conceal(loc, item.get("input"))
        if described_in is None:
            issues.append(_plain_issue(item, loc, where, hidden))
        else:
            issues.append(_annotated_issue(item, loc, where, hidden, described_in))
    return issues


def fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model (or dataclass) at ``loc`` under ``root``."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = _field_types(current)
        if str(part) in fields:  # else a key of a dict field: the model stays the same
            current = fields[str(part)]
    return list(_field_types(current))


def hint_for(item: Mapping[str, Any], described_in: str) -> str:
    """A hint by the kind of a pydantic error item, for an error without its own fix."""
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
    return f"see the field's description in {described_in}"


def _reported(error: ValidationError, annotated: bool) -> Iterator[Mapping[str, Any]]:
    """The error items worth an issue: for a user's document, a sequence's ``too_short``
    is left out when one of its items failed (the item was dropped; its issue says why)."""
    items = error.errors()
    locs = [tuple(i["loc"]) for i in items]
    for item in items:
        loc = tuple(item["loc"])
        dropped = any(o[: len(loc)] == loc and o != loc for o in locs)
        if annotated and item["type"] == "too_short" and dropped:
            continue
        yield item


def _plain_issue(
    item: Mapping[str, Any], loc: tuple[Any, ...], where: str, hidden: bool
) -> Finding:
    value = item.get("input")
    scalar = isinstance(value, str | int | float | bool)
    shown = f" (got {value!r})" if scalar and not hidden else ""
    return config_issue(field_path(loc) or where, item["msg"] + shown)


def _annotated_issue(
    item: Mapping[str, Any], loc: tuple[Any, ...], where: str, hidden: bool, described_in: str
) -> Finding:
    path = field_path(loc)
    message, _, fix = item["msg"].removeprefix("Value error, ").partition(" — ")
    value = item.get("input")
    shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
    if fix or hidden or path.endswith("_secret"):
        shown = ""  # a *_secret field names a secret: what was typed there may be one
    if path.endswith("_secret") and item["type"] == "string_pattern_mismatch":
        message = "must be the name of a secret config key, not its value"
        fix = (
            "put a key name here (letters, digits, _) and set the value with "
            "`pulumi config set --secret KEY` (it prompts, or reads stdin)"
        )
    return config_issue(path or where, message + shown, fix or hint_for(item, described_in))


def _field_types(kind: Any) -> dict[str, Any]:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {name: _inner(f.annotation) for name, f in kind.model_fields.items()}
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return {f.name: None for f in dataclasses.fields(kind)}
    return {}


def _inner(annotation: Any) -> Any:
    """The model or dataclass inside an annotation (``X | None``, ``dict[str, X]``)."""
    if _field_types(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner(arg)
        if found is not None:
            return found
    return None
