"""The package's components, built by the plugin (``construct``) for programs in any
Pulumi language. None yet: :func:`component_schemas` is what the package schema lists."""

from __future__ import annotations

from typing import Any


def component_schemas() -> dict[str, dict[str, Any]]:
    """Type token → the schema of each component resource (``isComponent: true``)."""
    return {}
