"""What runs on a cloud instance goes when the instance goes.

A resource on a host you own must reach the host to be read or deleted: an unreachable
host is an error (it may come back, with the engine still running). A cloud stack's
host is an instance (its :class:`~amdfleet.remote.transport.target.HostTarget` names it in
``cloud_instance``): once the instance is deleted out of band, nothing that ran on it
exists any more, and ``pulumi refresh`` or ``pulumi destroy`` must not be stuck on it.
:func:`gone_with_instance` wraps a provider's ``read`` or ``delete``: when the method
fails because such a host does not answer, ``read`` reports the resource gone (``pulumi
refresh`` drops it, the next ``up`` creates it again on the new instance) and
``delete`` counts as done; either way a warning names the host and the instance.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pulumi.dynamic import ReadResult

from amdfleet.errors import HostUnreachableError
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import plain

Method = TypeVar("Method", bound=Callable[..., Any])


def gone_with_instance(method: Method) -> Method:
    """Wrap ``read`` or ``delete(self, id_, props)`` as the module docstring says."""

    @functools.wraps(method)
    def wrapper(self: Any, id_: str, props: dict[str, Any]) -> Any:
        try:
            return method(self, id_, props)
        except HostUnreachableError as e:
            instance = cloud_instance(props)
            if instance is None:
                raise
            reading = method.__name__ == "read"
            outcome = (
                "reported gone (the next `pulumi up` creates it again)"
                if reading
                else "counted as deleted"
            )
            with ResourceProgress.for_resource(props) as progress:
                progress.warn(
                    f"{e.host} (cloud instance {instance}) does not answer: {e.reason}; what "
                    f"ran on it went with it, so this resource is {outcome}"
                )
            return ReadResult(id_="", outs={}) if reading else None

    return wrapper  # type: ignore[return-value]


def cloud_instance(props: Mapping[str, Any]) -> str | None:
    """The cloud instance named by any host in ``props`` (a provider's inputs or outputs:
    ``host``, ``hosts``, ``nodes[].host``, ``tokenizer_host`` ...), or None."""
    return _find(plain(dict(props)))


def _find(value: Any) -> str | None:
    if isinstance(value, dict):
        found = value.get("cloud_instance")
        if isinstance(found, str) and found:
            return found
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find(item)
            if found:
                return found
    return None
