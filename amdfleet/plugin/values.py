"""Property values between the wire (:class:`PropertyValue`) and amdfleet's providers.

Providers take and return plain JSON-like Python values, as they did as dynamic
providers: a secret arrives wrapped in the SDK's secret signature (so progress masks its
text, and :func:`~amdfleet.providers.props.plain` unwraps it), a value not known yet
(preview) as :class:`pulumi.output.Unknown`, and numbers as floats.

On the wire an unknown is the string :data:`pulumi.runtime.rpc.UNKNOWN`. The SDK's
:class:`PropertyValue` (3.272) reads it as that plain string and cannot write its own
``Computed`` at all, so this module converts the sentinel both ways itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi.output import Unknown
from pulumi.provider.experimental.property_value import (
    Computed,
    PropertyValue,
    ResourceReference,
)
from pulumi.runtime import rpc


def to_python(value: PropertyValue) -> Any:
    """The provider-side value of ``value``."""
    inner = value.value
    if isinstance(inner, Computed) or inner == rpc.UNKNOWN:
        plain: Any = Unknown()  # type: ignore[no-untyped-call]
    elif isinstance(inner, ResourceReference):
        plain = inner.urn
    elif isinstance(inner, Mapping):
        plain = {k: to_python(v) for k, v in inner.items()}
    elif isinstance(inner, tuple):
        plain = [to_python(v) for v in inner]
    else:
        plain = inner
    return rpc.wrap_rpc_secret(plain) if value.is_secret else plain


def map_to_python(values: Mapping[str, PropertyValue] | None) -> dict[str, Any]:
    """A property map as a plain dict."""
    return {k: to_python(v) for k, v in (values or {}).items()}


def from_python(value: Any) -> PropertyValue:
    """The wire value of a provider-side ``value`` (ints become floats; a value in the
    secret signature becomes a secret; an Unknown becomes the wire's unknown)."""
    if rpc.is_rpc_secret(value):
        return from_python(rpc.unwrap_rpc_secret(value)).with_secret(True)
    if isinstance(value, Unknown):
        return PropertyValue(rpc.UNKNOWN)
    if value is None or isinstance(value, bool | str | float):
        return PropertyValue(value)
    if isinstance(value, int):
        return PropertyValue(float(value))
    if isinstance(value, Mapping):
        return PropertyValue({str(k): from_python(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return PropertyValue([from_python(v) for v in value])
    raise TypeError(f"a provider returned a {type(value).__name__}, not a JSON value")


def map_from_python(values: Mapping[str, Any]) -> dict[str, PropertyValue]:
    """A plain dict as a property map."""
    return {k: from_python(v) for k, v in values.items()}
