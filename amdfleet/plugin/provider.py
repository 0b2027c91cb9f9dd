"""AmdFleetProvider: the Pulumi provider of the ``amdfleet`` package.

One :class:`pulumi.provider.experimental.provider.Provider` serves every type of
:mod:`~amdfleet.plugin.registry` and constructs the components of
:mod:`~amdfleet.plugin.components`: each call goes to the provider class of the type named
in its URN, run in a worker thread (providers block on SSH and HTTP), with plain values
(:mod:`~amdfleet.plugin.values`) and the resource's URN as the ``resource_urn``
property, which progress reports for and which never reaches the state. A Read with the
id alone is an import (``pulumi import``, the ``import_`` option): only an EngineService
can be imported, from an id that names a host of the stack's fleet config (which Pulumi
configures the provider with) and the engine's port (:mod:`amdfleet.providers.adoption`).

Stacks created before the plugin hold each resource's pickled dynamic provider under
``__provider`` in its outputs. When nothing else changed, :meth:`AmdFleetProvider.diff`
reports that key as deleted and :meth:`AmdFleetProvider.update` drops it without calling
the resource's provider: the state moves over and no host is touched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from functools import cached_property
from importlib import metadata
from typing import Any, TypeVar

from pulumi.provider.experimental import provider as p
from pulumi.provider.experimental.property_value import PropertyValue

from amdfleet.errors import AmdFleetError
from amdfleet.plugin.values import map_from_python, map_to_python
from amdfleet.providers.adoption import hosts_from_config
from amdfleet.providers.progress import URN_KEY
from amdfleet.providers.props import PROVIDER_KEY, plain
from amdfleet.providers.resource import PACKAGE

T = TypeVar("T")
HIDDEN_KEYS = (URN_KEY, PROVIDER_KEY)
"""Properties no diff compares: the URN a call runs for, a legacy pickled provider."""


class ImportRefused(AmdFleetError):
    """``pulumi import`` of a type amdfleet cannot adopt."""


def version() -> str:
    """amdfleet's installed version (the plugin's version)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0.0.0"


class AmdFleetProvider(p.Provider):
    """Dispatches every resource call to the provider class of its type."""

    def __init__(self, providers: Mapping[str, Any] | None = None) -> None:
        self._given = providers
        self._fleet: Any = None

    @cached_property
    def _providers(self) -> Mapping[str, Any]:
        if self._given is not None:
            return self._given
        from amdfleet.plugin.registry import providers

        return providers()

    def _for(self, qualified: str) -> Any:
        type_ = qualified.rsplit("$", 1)[-1]  # a URN's type carries its parents' types
        try:
            return self._providers[type_]
        except KeyError:
            known = ", ".join(sorted(self._providers))
            raise AmdFleetError(
                f"the amdfleet plugin {version()} has no resource type {type_}; it serves "
                f"{known}\n  hint: use one amdfleet release for the program and the plugin"
            ) from None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # -- the package -------------------------------------------------------------------

    async def get_schema(self, request: p.GetSchemaRequest) -> p.GetSchemaResponse:
        """The package schema (:mod:`amdfleet.plugin.schema`)."""
        from amdfleet.plugin.schema import package_schema

        return p.GetSchemaResponse(schema=json.dumps(package_schema(version())))

    async def configure(self, request: p.ConfigureRequest) -> p.ConfigureResponse:
        """Secrets arrive marked (progress masks them); no create or update at preview
        (outputs stay unknown until the update, as providers act on hosts). Keeps the
        stack's ``amdfleet:fleet`` config (Pulumi configures the default provider with the
        stack's ``amdfleet:*`` keys): an import id names a host of it."""
        fleet = request.variables.get(f"{PACKAGE}:config:fleet")
        self._fleet = fleet if fleet is not None else map_to_python(request.args).get("fleet")
        return p.ConfigureResponse(accept_secrets=True, supports_preview=False)

    # -- resources ---------------------------------------------------------------------

    async def check(self, request: p.CheckRequest) -> p.CheckResponse:
        olds = map_to_python(request.old_inputs)
        news = map_to_python(request.new_inputs)
        result = await self._run(self._for(request.type).check, olds, news)
        failures = [p.CheckFailure(f.property, f.reason) for f in result.failures or []]
        inputs = {k: v for k, v in (result.inputs or news).items() if k not in HIDDEN_KEYS}
        return p.CheckResponse(inputs=map_from_python(inputs), failures=failures)

    async def diff(self, request: p.DiffRequest) -> p.DiffResponse:
        olds = {**map_to_python(request.old_state), URN_KEY: request.urn}
        news = map_to_python(request.new_inputs)
        result = await self._run(self._for(request.type).diff, request.resource_id, olds, news)
        replaces = list(result.replaces or [])
        if not result.changes and not replaces and PROVIDER_KEY in olds:
            return p.DiffResponse(
                changes=True,
                detailed_diff={PROVIDER_KEY: p.PropertyDiff(p.PropertyDiffKind.DELETE, False)},
            )
        changes = result.changes if result.changes is not None else None
        if replaces:
            changes = True
        return p.DiffResponse(
            changes=changes,
            replaces=replaces,
            stables=list(result.stables or []),
            delete_before_replace=bool(result.delete_before_replace),
            detailed_diff=_detailed(olds, news, replaces) if changes else {},
        )

    async def create(self, request: p.CreateRequest) -> p.CreateResponse:
        props = {**map_to_python(request.properties), URN_KEY: request.urn}
        result = await self._run(self._for(request.type).create, props)
        return p.CreateResponse(resource_id=result.id, properties=_outputs(result.outs))

    async def read(self, request: p.ReadRequest) -> p.ReadResponse:
        """A refresh (the resource's outputs and inputs given), or an import (the id
        alone): then the type's provider adopts what the id names (only EngineService
        can: :mod:`amdfleet.providers.adoption`) and returns its inputs as well."""
        if not request.properties and not request.inputs:
            return await self._adopt(request)
        outputs = map_to_python(request.properties)
        inputs = map_to_python(request.inputs)
        props = {**inputs, **outputs, URN_KEY: request.urn}
        result = await self._run(self._for(request.type).read, request.resource_id, props)
        if not result.id:
            return p.ReadResponse(resource_id="")
        return p.ReadResponse(
            resource_id=result.id,
            properties=_outputs(result.outs or {}),
            inputs=request.inputs,
        )

    async def _adopt(self, request: p.ReadRequest) -> p.ReadResponse:
        provider = self._for(request.type)
        adopt = getattr(provider, "adopt", None)
        if adopt is None:
            name = request.type.rsplit(":", 1)[-1]
            raise ImportRefused(
                f"amdfleet cannot import a {name}: only an EngineService (a running engine, "
                "id <host>:<port>) can be imported; the program creates the rest"
            )
        hosts = await self._run(hosts_from_config, self._fleet)
        id_, inputs, outputs = await self._run(adopt, request.resource_id, hosts, request.urn)
        return p.ReadResponse(
            resource_id=id_, properties=_outputs(outputs), inputs=_outputs(inputs)
        )

    async def update(self, request: p.UpdateRequest) -> p.UpdateResponse:
        olds = map_to_python(request.olds)
        news = map_to_python(request.news)
        provider = self._for(request.type)
        if PROVIDER_KEY in olds:
            moved = await self._run(provider.diff, request.resource_id, olds, news)
            if not moved.changes and not moved.replaces:
                return p.UpdateResponse(properties=_outputs(olds))
        news[URN_KEY] = request.urn
        result = await self._run(provider.update, request.resource_id, olds, news)
        return p.UpdateResponse(properties=_outputs(result.outs or {}))

    async def delete(self, request: p.DeleteRequest) -> None:
        props = {**map_to_python(request.properties), URN_KEY: request.urn}
        await self._run(self._for(request.type).delete, request.resource_id, props)

    # -- components --------------------------------------------------------------------

    async def construct(self, request: p.ConstructRequest) -> p.ConstructResponse:
        """A component of the package (:mod:`amdfleet.plugin.components`): registered
        with its resources, its outputs returned once they exist."""
        from amdfleet.plugin.components import construct

        return await construct(request)


def _outputs(outs: Mapping[str, Any]) -> dict[str, PropertyValue]:
    return map_from_python({k: v for k, v in outs.items() if k not in HIDDEN_KEYS})


def _detailed(
    olds: Mapping[str, Any], news: Mapping[str, Any], replaces: list[str]
) -> dict[str, p.PropertyDiff]:
    """What the CLI lists under an update: each input whose value changed, as a
    replacement where the provider said so."""
    out: dict[str, p.PropertyDiff] = {}
    for key in sorted(set(news) | set(replaces)):
        if key in HIDDEN_KEYS:
            continue
        if key not in replaces and plain(olds.get(key)) == plain(news.get(key)):
            continue
        if key not in olds:
            kind = p.PropertyDiffKind.ADD_REPLACE if key in replaces else p.PropertyDiffKind.ADD
        else:
            kind = (
                p.PropertyDiffKind.UPDATE_REPLACE if key in replaces else p.PropertyDiffKind.UPDATE
            )
        out[key] = p.PropertyDiff(kind, True)
    return out
