"""The props model every provider's properties are parsed into, and diff helpers.

Each provider module defines one frozen props model (a :class:`ProviderProps`) used on
both sides of the plugin boundary: the program builds it and turns it into the resource's
inputs (:meth:`ProviderProps.to_inputs`, with the values that are Pulumi Outputs there
passed alongside), and every provider method that acts begins with one
:meth:`ProviderProps.from_inputs`, then reads attributes.

Through the engine, numbers arrive as floats (an ``int`` field accepts ``1.0``, pydantic's
lax mode), secrets may arrive wrapped in the SDK's secret signature (depending on how the
host negotiated), and stacks from before the plugin hold a pickled provider under
``__provider``;
:meth:`~ProviderProps.from_inputs` normalises all three. A resource's outputs are fields
of its model too (``None`` until the provider sets them), since ``read``, ``update`` and
``delete`` receive them with the inputs. ``check`` and ``diff`` see unknown values during
preview, so they compare the raw values (:func:`changed_keys`) instead of parsing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import pulumi
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from amdfleet.errors import PropsError
from amdfleet.findings import Finding
from amdfleet.providers.progress import URN_KEY
from amdfleet.pydantic_issues import validation_issues

PROVIDER_KEY = "__provider"
"""The pickled provider a Python dynamic resource kept in its state (stacks created before
the plugin; never part of a props model, dropped by their first update)."""


class ProviderProps(BaseModel):
    """Base of the providers' props models: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()
    """Secret inputs: never part of the outputs (:meth:`to_outputs`) nor of messages."""
    SECRET_OUTPUTS: ClassVar[tuple[str, ...]] = ()
    """Outputs whose value is a secret (e.g. a fingerprint of secrets): the resource keeps
    them secret in the state, and the package schema marks them ``secret``."""

    resource_urn: str | None = Field(
        None,
        description="The resource's own URN, for progress messages (compared by no diff).",
    )

    @classmethod
    def from_inputs(cls, props: Mapping[str, Any]) -> Self:
        """Parse the properties a provider method received (inputs, or the outputs of the
        previous operation): secrets unwrapped, ``__provider`` dropped, validated.

        Raises PropsError naming every property path that is unknown or of a wrong type.
        """
        data = {k: v for k, v in plain(dict(props)).items() if k != PROVIDER_KEY}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise PropsError(_issues(cls, e), cls.__name__) from e

    def to_inputs(self, **deferred: Any) -> dict[str, Any]:
        """The resource's inputs on the program side: these props as JSON values, with
        ``deferred`` (values that are Pulumi Outputs there, e.g. a secret or another
        resource's output, and the ``resource_urn``) in place of their fields."""
        unknown = sorted(set(deferred) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        return {**self.model_dump(mode="json", exclude={URN_KEY}), **deferred}

    @classmethod
    def inputs_of(cls, props: Self | pulumi.Output[Self], **deferred: Any) -> dict[str, Any]:
        """A resource's inputs from ``props`` (:meth:`to_inputs`), or from an Output of
        them (props built once other resources' outputs are known, e.g. a cloud
        instance's address): then each field is an Output of its JSON value."""
        if isinstance(props, ProviderProps):
            return props.to_inputs(**deferred)
        unknown = sorted(set(deferred) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        values: pulumi.Output[dict[str, Any]] = props.apply(lambda p: p.to_inputs())
        keys = [k for k in cls.model_fields if k != URN_KEY and k not in deferred]
        return {**{k: values.apply(functools.partial(_field, key=k)) for k in keys}, **deferred}

    def to_outputs(self, **outputs: Any) -> dict[str, Any]:
        """What a provider method returns: these props without the secret inputs (and
        without ``resource_urn`` when there is none), updated with ``outputs``."""
        data = self.model_dump(mode="json", exclude=set(self.SECRET_FIELDS))
        if data.get(URN_KEY) is None:
            data.pop(URN_KEY, None)
        return {**data, **outputs}


def plain(value: Any) -> Any:
    """``value`` with any secret wrappers removed, recursively."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def fingerprint(value: Any) -> str:
    """A stable SHA-256 of a JSON-able value (used to detect changed inputs, including
    secrets, without storing the secret in outputs). A value not known yet (a preview of
    an input computed by another resource) hashes as a placeholder: the preview shows a
    change, and the update re-checks with the real value."""
    text = json.dumps(plain(value), sort_keys=True, separators=(",", ":"), default=_unknown)
    return hashlib.sha256(text.encode()).hexdigest()


def _unknown(value: Any) -> str:
    if isinstance(value, Unknown):
        return "<unknown until the update>"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def changed_keys(
    olds: Mapping[str, Any], news: Mapping[str, Any], keys: tuple[str, ...]
) -> list[str]:
    """The ``keys`` whose (unwrapped) values differ between ``olds`` and ``news``."""
    return [k for k in keys if plain(olds.get(k)) != plain(news.get(k))]


def _field(inputs: Mapping[str, Any], key: str) -> Any:
    return inputs.get(key)


def _issues(model: type[ProviderProps], error: ValidationError) -> list[Finding]:
    def secret(loc: tuple[Any, ...], value: Any) -> bool:
        return bool(loc) and loc[0] in model.SECRET_FIELDS

    return validation_issues(error, model, where="props", conceal=secret)
