"""The base of amdfleet's custom resources: a type token of the ``amdfleet`` package.

Every amdfleet resource is a Pulumi custom resource of the package ``amdfleet`` (type
``amdfleet:index:<Name>``), served by the provider plugin ``pulumi-resource-amdfleet``
(:mod:`amdfleet.plugin`), which the engine finds through the project's
``plugins.providers`` entry (or on ``$PATH``). A resource class names its provider class;
the plugin's registry (:mod:`amdfleet.plugin.registry`) maps each type to it.

Stacks created before the plugin existed hold the same resources as Python dynamic
resources (type ``pulumi-python:dynamic/amdfleet:<Name>``, with the provider pickled in
their state). Each resource carries that type as an alias, so such a stack's next ``up``
adopts every resource in place: the engine matches the old URN, asks the new provider
for its diff, and the plugin drops the pickled provider from the outputs without
touching a host (:mod:`amdfleet.plugin.provider`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pulumi

from amdfleet.providers.props import ProviderProps

PACKAGE = "amdfleet"
"""The Pulumi package name: the first part of every type token and the plugin's name."""
LEGACY_TYPE_PREFIX = "pulumi-python:dynamic/amdfleet:"
"""The type of the same resources before the plugin (Python dynamic resources)."""


def type_token(name: str) -> str:
    """``amdfleet:index:<name>``: the Pulumi type of the resource ``name``."""
    return f"{PACKAGE}:index:{name}"


class AmdFleetResource(pulumi.CustomResource):
    """A custom resource of the ``amdfleet`` package.

    Subclasses declare ``name=`` (the type's last part), ``provider=`` (the class
    implementing it in the plugin) and ``props=`` (the props model of its properties, from
    which the package schema is generated: :mod:`amdfleet.plugin.schema`), and pass their
    inputs as a dict: every field of their props model, outputs included as None, so the
    SDK resolves each as an attribute.
    """

    type_name: ClassVar[str]
    provider_class: ClassVar[type]
    props_model: ClassVar[type[ProviderProps]]

    def __init_subclass__(
        cls, *, name: str, provider: type, props: type[ProviderProps], **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = name
        cls.provider_class = provider
        cls.props_model = props

    def __init__(
        self,
        name: str,
        inputs: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        legacy = pulumi.ResourceOptions(
            aliases=[pulumi.Alias(type_=LEGACY_TYPE_PREFIX + self.type_name)]
        )
        super().__init__(
            type_token(self.type_name), name, inputs, pulumi.ResourceOptions.merge(opts, legacy)
        )
