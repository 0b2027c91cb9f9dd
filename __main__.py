"""amdfleet's Pulumi program: load the stack, plan it, build the components, export.

All logic lives in the ``amdfleet`` package; a stack that cannot work is rejected here,
before any resource is registered, and every amdfleet error becomes a clean message.
"""

import pulumi

from amdfleet.components import Deployment, Fleet
from amdfleet.config import load_from_pulumi
from amdfleet.errors import AmdFleetError
from amdfleet.plan import plan

try:
    spec, secrets = load_from_pulumi()
    deployment_plan = plan(spec)
    fleet = Fleet("fleet", deployment_plan)
    deployment = Deployment("deployment", deployment_plan, fleet, secrets)
except AmdFleetError as error:
    raise pulumi.RunError(str(error)) from error

pulumi.export("endpoint", deployment.endpoint)
pulumi.export("model", deployment.model)
pulumi.export("api_key", deployment.api_key)
pulumi.export("hosts", deployment.hosts)
pulumi.export("engine", deployment.engine)
pulumi.export("verification", deployment.verification)
pulumi.export("ready", deployment.ready)
pulumi.export("campaign", deployment.campaign)
