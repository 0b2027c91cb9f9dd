"""Leaked instances: tagged by amdfleet, owned by no stack's state.

A GPU instance that outlives its stack bills by the hour and nobody looks at it. Every
instance amdfleet creates carries ``amdfleet-project-<project>`` (see
:func:`~amdfleet.clouds.api.instance_tags`); every stack's state records the instances
it owns (the ``instance_id`` output of each CloudInstance). An instance with the tag
whose id no state holds is an orphan: a create interrupted before its result was
recorded, a state deleted with ``pulumi stack rm --force``, a stack from another
machine's backend. Ownership is only as complete as the states given: listing stacks
must succeed, or nothing is called an orphan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amdfleet.catalog.clouds import cloud_size
from amdfleet.clouds.api import TAG_PREFIX, CloudAPI, Instance, wait_gone
from amdfleet.errors import AmdFleetError

DYNAMIC_TYPE = "pulumi-python:dynamic"
"""The start of a dynamic resource's type (``pulumi-python:dynamic/amdfleet:CloudInstance``)."""


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
            if not kind.startswith(DYNAMIC_TYPE) or "instance_id" not in outputs:
                continue
            instance_id = outputs.get("instance_id")
            if isinstance(instance_id, str) and instance_id:
                owned.add(instance_id)
    return owned


def find_orphans(
    client: CloudAPI, project: str, owned: set[str], provider: str | None = None
) -> list[Orphan]:
    """The instances tagged for ``project`` whose ids are not in ``owned``."""
    found = client.list_tagged(f"{TAG_PREFIX}-project-{project}")
    orphans = []
    for instance in sorted(found, key=lambda i: (i.created_at or "", i.id)):
        if instance.id in owned:
            continue
        size = cloud_size(provider or client.provider, instance.size)
        orphans.append(
            Orphan(
                instance,
                _tag_value(instance.tags, "stack"),
                _tag_value(instance.tags, "node"),
                size.price_hourly_usd if size else None,
            )
        )
    return orphans


def delete_orphans(
    client: CloudAPI, orphans: Sequence[Orphan], *, timeout_s: float, poll_s: float = 5.0
) -> list[str]:
    """Delete every orphan and wait until the cloud no longer lists it; the ids that were
    still there at the deadline (empty when all are gone)."""
    for orphan in orphans:
        client.delete(orphan.instance.id)
    ids = [o.instance.id for o in orphans]
    return [i.id for i in wait_gone(client, ids, within=timeout_s, max_wait=poll_s)]


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
        tail = "\n".join(str(e).strip().splitlines()[-5:])
        raise OwnershipError(
            f"cannot read the stacks of the project in {project_dir}: {tail}\n"
            "  hint: run it from the project directory with the pulumi CLI on PATH and the "
            "backend you deploy with (`pulumi login ...`); no instance is called an orphan "
            "without every state"
        ) from e


def _tag_value(tags: Sequence[str], kind: str) -> str | None:
    prefix = f"{TAG_PREFIX}-{kind}-"
    return next((t.removeprefix(prefix) for t in tags if t.startswith(prefix)), None)
