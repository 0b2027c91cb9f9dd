"""A tiny Pulumi program for tests/program/test_reap.py: one cheap real resource and,
unless ``reaptest:campaign`` is false, amdfleet's own ``campaign`` output.

The resource is a dynamic resource whose create writes a marker file and whose delete
removes it, so a test sees a destroy on disk. The ``campaign`` output is built by
``amdfleet.components.campaign_output`` from the stack's ``startedAt``, ``ttlHours``,
``onExpiry`` and ``owner`` config, so it has exactly the shape real amdfleet stacks export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from amdfleet.components import campaign_output
from amdfleet.plan.models import LifetimePlan


class MarkerProvider(ResourceProvider):
    """A file on disk: created with its text, removed on delete (already gone is fine)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        Path(props["path"]).write_text(props["text"])
        return CreateResult(id_=props["path"], outs=props)

    def delete(self, id: str, props: dict[str, Any]) -> None:
        path = Path(props["path"])
        # A test makes a destroy fail by putting <marker>.stuck beside the marker.
        if path.with_suffix(".stuck").exists():
            raise RuntimeError(f"{path} is stuck: {path.with_suffix('.stuck')} exists")
        path.unlink(missing_ok=True)


class Marker(Resource):
    def __init__(self, name: str, path: str, text: str) -> None:
        super().__init__(MarkerProvider(), name, {"path": path, "text": text})


config = pulumi.Config()
stack = pulumi.get_stack()
Marker(f"marker-{stack}", config.require("marker"), f"stack {stack}\n")
pulumi.export("endpoint", f"http://reap-test.invalid/{stack}")
if config.get_bool("campaign") is not False:
    spec = LifetimePlan(
        ttl_hours=config.get_float("ttlHours"),
        on_expiry=config.get("onExpiry") or "warn",  # type: ignore[arg-type]
        keep_weights=False,
        owner=config.get("owner"),
    )
    pulumi.export("campaign", campaign_output(spec, config.require("startedAt")))
