"""amdfleet's Pulumi program: load the stack, plan it, build the components, export.

:func:`main` is the whole program of a project that deploys one amdfleet stack (this
repository's ``__main__.py``, or a user's own project: ``from amdfleet.program import
main; main()``). :func:`deploy` builds the resources of a loaded stack and returns its
outputs, for a program (or a component) that exports them its own way.

A stack that cannot work is rejected before any resource is registered, and every
amdfleet error becomes a clean message. A cloud stack creates its instances and deploys
on them (see :mod:`amdfleet.cloud_fleet`); its ``instances`` output lists them with their
price.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from amdfleet.components import Deployment, Fleet
from amdfleet.config import StackSpec, load_from_pulumi
from amdfleet.errors import AmdFleetError
from amdfleet.verify.reference import checked_plan

OUTPUT_NAMES = ("model", "api_key", *Deployment.OUTPUT_NAMES)
"""The stack outputs every amdfleet stack exports (a cloud stack adds ``instances``)."""


def deploy(
    spec: StackSpec,
    secrets: Mapping[str, Any],
    opts: pulumi.ResourceOptions | None = None,
) -> dict[str, Any]:
    """Register the resources of ``spec`` (under ``opts.parent`` when given) and return
    its outputs by name (:data:`OUTPUT_NAMES`, plus ``instances`` for a cloud stack).

    Raises an AmdFleetError when the stack cannot work, before registering anything.
    """
    deployment_plan = checked_plan(spec)  # the plan, and the parity reference it names
    outputs: dict[str, Any]
    if deployment_plan.cloud is None:
        fleet = Fleet("fleet", deployment_plan, opts=opts)
        deployment = Deployment("deployment", deployment_plan, fleet, dict(secrets), opts=opts)
        outputs = {key: getattr(deployment, key) for key in Deployment.OUTPUT_NAMES}
        api_key = deployment.api_key
    else:
        from amdfleet.cloud_fleet import CloudFleet, deploy_on_cloud

        token = secrets[deployment_plan.cloud.token_secret]
        if token is None:  # load_from_pulumi refuses a missing secret first
            raise RuntimeError("the cloud token secret is not set")
        cloud_fleet = CloudFleet("cloud", deployment_plan, token, opts=opts)
        outputs = dict(deploy_on_cloud(deployment_plan, cloud_fleet, dict(secrets), opts=opts))
        key = deployment_plan.serving.api_key_secret
        api_key = pulumi.Output.secret(secrets[key]) if key and secrets.get(key) else None
        outputs["instances"] = cloud_fleet.inventory
    outputs["model"] = deployment_plan.model.served_name
    outputs["api_key"] = api_key
    return outputs


def main() -> None:
    """The program: deploy the current stack and export its outputs."""
    try:
        spec, secrets = load_from_pulumi()
        outputs = deploy(spec, secrets)
    except AmdFleetError as error:
        raise pulumi.RunError(str(error)) from error
    if "instances" in outputs:
        pulumi.export("instances", outputs["instances"])
    for name in OUTPUT_NAMES:
        pulumi.export(name, outputs[name])
