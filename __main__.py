"""amdfleet's Pulumi program: load the stack, plan it, build the components, export.

All logic lives in the ``amdfleet`` package; a stack that cannot work is rejected here,
before any resource is registered, and every amdfleet error becomes a clean message.
A cloud stack creates its instances and deploys on them (see :mod:`amdfleet.cloud_fleet`);
its ``instances`` output lists them with their price.
"""

import pulumi

from amdfleet.components import Deployment, Fleet
from amdfleet.config import load_from_pulumi
from amdfleet.errors import AmdFleetError
from amdfleet.verify.reference import checked_plan

try:
    spec, secrets = load_from_pulumi()
    deployment_plan = checked_plan(spec)  # the plan, and the parity reference it names
    if deployment_plan.cloud is None:
        fleet = Fleet("fleet", deployment_plan)
        deployment = Deployment("deployment", deployment_plan, fleet, secrets)
        outputs = {key: getattr(deployment, key) for key in Deployment.OUTPUT_NAMES}
        api_key = deployment.api_key
    else:
        from amdfleet.cloud_fleet import CloudFleet, deploy_on_cloud

        token = secrets[deployment_plan.cloud.token_secret]
        if token is None:  # load_from_pulumi refuses a missing secret first
            raise RuntimeError("the cloud token secret is not set")
        cloud_fleet = CloudFleet("cloud", deployment_plan, token)
        outputs = deploy_on_cloud(deployment_plan, cloud_fleet, secrets)
        key = deployment_plan.serving.api_key_secret
        api_key = pulumi.Output.secret(secrets[key]) if key and secrets.get(key) else None
        pulumi.export("instances", cloud_fleet.inventory)
except AmdFleetError as error:
    raise pulumi.RunError(str(error)) from error

pulumi.export("endpoint", outputs["endpoint"])
pulumi.export("model", deployment_plan.model.served_name)
pulumi.export("api_key", api_key)
for name in ("hosts", "engine", "verification", "ready", "verified_at", "campaign"):
    pulumi.export(name, outputs[name])
