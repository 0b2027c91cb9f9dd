"""Leaked instances: tagged by amdfleet, owned by no stack's state.

A GPU instance that outlives its stack bills by the hour and nobody looks at it. Every
instance amdfleet creates carries ``amdfleet-project-<project>`` (see
:func:`~amdfleet.clouds.api.instance_tags`); every stack's state records the instances
it owns (the ``instance_id`` output of each CloudInstance). An instance with the tag
whose id no state holds is an orphan: a create interrupted before its result was
recorded, a state deleted with ``pulumi stack rm --force``, a stack from another
machine's backend. Ownership is only as complete as the states given: listing stacks
must succeed and every state must read, or nothing is called an orphan.

States come from a Pulumi project's backend (:func:`stack_states`, through the ``pulumi``
CLI) and/or from files ``pulumi stack export`` wrote (:func:`state_file`, no project or
CLI needed). An orphan's price is the catalog's, else the cloud's list of sizes, else
unknown (None): an unknown price is never counted as $0 (:func:`hourly_total`).

Hot Aisle's VMs carry amdfleet's marks only once ``create`` has written them; a VM whose
provision answer was lost and that no create adopted has none. :func:`unmarked` lists
such VMs of the team for the user to judge (a team may also hold VMs rented by hand, so
they are never deleted here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amdfleet.catalog.clouds import cloud_size
from amdfleet.clouds.api import TAG_PREFIX, CloudAPI, Instance, wait_gone
from amdfleet.errors import AmdFleetError, CloudAPIError
from amdfleet.pulumi_backend import mask_backend

INSTANCE_TYPES = ("amdfleet:index:CloudInstance", "pulumi-python:dynamic/amdfleet:CloudInstance")
"""A cloud instance's Pulumi type, and its type in stacks created before the plugin."""


class OwnershipError(AmdFleetError):
    """The stacks' states could not be read, so no instance can be called an orphan."""


@dataclass(frozen=True)
class Orphan:
    """A tagged instance no state owns, with what it costs."""

    instance: Instance
    stack: str | None
    node: str | None
    price_hourly_usd: float | None


def owned_ids(states: Iterable[Mapping[str, Any]]) -> set[str]:
    """The instance ids recorded in exported stack states (``pulumi stack export``)."""
    owned: set[str] = set()
    for state in states:
        resources = (state.get("deployment") or {}).get("resources") or []
        for resource in resources:
            outputs = resource.get("outputs") or {}
            kind = str(resource.get("type", ""))
            if kind not in INSTANCE_TYPES or "instance_id" not in outputs:
                continue
            instance_id = outputs.get("instance_id")
            if isinstance(instance_id, str) and instance_id:
                owned.add(instance_id)
    return owned


def find_orphans(
    client: CloudAPI, project: str, owned: set[str], provider: str | None = None
) -> list[Orphan]:
    """The instances tagged for ``project`` whose ids are not in ``owned``, each with its
    hourly price (the catalog's, else the cloud's list of sizes, else None)."""
    found = client.list_tagged(f"{TAG_PREFIX}-project-{project}")
    leaked = [
        i for i in sorted(found, key=lambda i: (i.created_at or "", i.id)) if i.id not in owned
    ]
    prices = _prices(client, provider or client.provider, {i.size for i in leaked})
    return [
        Orphan(
            instance,
            _tag_value(instance.tags, "stack"),
            _tag_value(instance.tags, "node"),
            prices.get(instance.size),
        )
        for instance in leaked
    ]


def hourly_total(orphans: Sequence[Orphan]) -> tuple[float, int]:
    """The summed hourly price of the orphans whose price is known, and how many have an
    unknown price (never counted as $0)."""
    known = [o.price_hourly_usd for o in orphans if o.price_hourly_usd is not None]
    return sum(known), len(orphans) - len(known)


def unmarked(client: CloudAPI) -> list[Instance]:
    """The instances of a cloud whose marks amdfleet writes after creating (Hot Aisle)
    that carry none: empty for a cloud that marks at birth."""
    list_all = getattr(client, "list_all", None)
    if list_all is None:
        return []
    return [i for i in list_all() if not i.tags]


def delete_orphans(
    client: CloudAPI, orphans: Sequence[Orphan], *, timeout_s: float, poll_s: float = 5.0
) -> list[str]:
    """Delete every orphan and wait until the cloud no longer lists it; the ids that were
    still there at the deadline (empty when all are gone)."""
    for orphan in orphans:
        client.delete(orphan.instance.id)
    ids = [o.instance.id for o in orphans]
    return [i.id for i in wait_gone(client, ids, within=timeout_s, max_wait=poll_s)]


def state_file(path: Path) -> dict[str, Any]:
    """One exported stack state (``pulumi stack export --file``), read and checked.
    Raises OwnershipError naming the file when it cannot be read or is not a state."""
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise OwnershipError(
            f"cannot read the state {path}: {e}\n  hint: pass what `pulumi stack export "
            "--file FILE` wrote; no instance is called an orphan without every state"
        ) from e
    deployment = state.get("deployment") if isinstance(state, dict) else None
    if not isinstance(deployment, dict) or not isinstance(deployment.get("resources", []), list):
        raise OwnershipError(
            f"{path} is not an exported stack state (no deployment.resources list)\n"
            "  hint: pass what `pulumi stack export --file FILE` wrote"
        )
    return dict(state)


def stack_states(project_dir: Path) -> list[dict[str, Any]]:
    """Every stack's exported state in the project at ``project_dir`` (the backend the
    ``pulumi`` CLI is logged in to), read through the Automation API as ``amdfleet reap``
    reads them. Raises OwnershipError when any cannot be read."""
    from pulumi import automation as auto

    try:
        workspace = auto.LocalWorkspace(work_dir=str(project_dir))
        return [
            {"deployment": workspace.export_stack(summary.name).deployment or {}}
            for summary in workspace.list_stacks()
        ]
    except (auto.CommandError, OSError) as e:
        tail = "\n".join(mask_backend(str(e)).strip().splitlines()[-5:])
        raise OwnershipError(
            f"cannot read the stacks of the project in {project_dir}: {tail}\n"
            "  hint: run it from the project directory with the pulumi CLI on PATH and the "
            "backend you deploy with (`pulumi login ...`); no instance is called an orphan "
            "without every state"
        ) from e


def _prices(client: CloudAPI, provider: str, slugs: set[str]) -> dict[str, float]:
    """Hourly prices of ``slugs``: the catalog's, else the cloud's own list (asked once,
    only when the catalog lacks one; a failure leaves those prices unknown)."""
    prices: dict[str, float] = {}
    for slug in slugs:
        size = cloud_size(provider, slug)
        if size is not None:
            prices[slug] = size.price_hourly_usd
    if slugs - set(prices):
        try:
            offers = client.sizes()
        except CloudAPIError:
            return prices
        for offer in offers:
            if offer.slug in slugs - set(prices) and offer.price_hourly is not None:
                prices[offer.slug] = offer.price_hourly
    return prices


def _tag_value(tags: Sequence[str], kind: str) -> str | None:
    prefix = f"{TAG_PREFIX}-{kind}-"
    return next((t.removeprefix(prefix) for t in tags if t.startswith(prefix)), None)
