"""The planner: a pure function from a stack spec to a deployment plan.

``plan(spec)`` checks that the layout can work and resolves everything the renderers,
components and providers need. It does no I/O and never talks to Pulumi; every problem
found is raised together as a :class:`~amdfleet.errors.PlanError` naming the field and
a fix. One module per step:

- :mod:`.checkpoint` — the one lookup of accelerator, model, engine and recipes
  (:class:`~.checkpoint.Resolved`), and the checkpoint;
- :mod:`.checks` — feasibility checks (fleet and cloud, parallelism, engine,
  verification);
- :mod:`.serving` — serving knobs and environment over the seeds' recipes;
- :mod:`.memory` — the per-GPU memory budget and what to change when it does not fit;
- :mod:`.image` — the container image;
- :mod:`.layout` — nodes: ranks, addresses, env, command lines, host requirements;
- :mod:`.binding` — a multi-node cloud plan's addresses, bound once the instances exist;
- :mod:`.models` — the typed plan records; :mod:`.planner` — ``plan`` itself.
"""

from amdfleet.plan.models import (
    GIB,
    REMOTE_ROOT,
    AcceleratorPlan,
    CloudPlan,
    ClusterPlan,
    DeploymentPlan,
    EnginePlan,
    FabricPlan,
    ImagePlan,
    MemoryBudget,
    ModelPlan,
    NodePlan,
    ParallelismPlan,
    ReadinessPlan,
    ServingPlan,
    StageMemory,
    VerificationPlan,
    WeightsPlan,
)
from amdfleet.plan.planner import plan

__all__ = [
    "GIB",
    "REMOTE_ROOT",
    "AcceleratorPlan",
    "CloudPlan",
    "ClusterPlan",
    "DeploymentPlan",
    "EnginePlan",
    "FabricPlan",
    "ImagePlan",
    "MemoryBudget",
    "ModelPlan",
    "NodePlan",
    "ParallelismPlan",
    "ReadinessPlan",
    "ServingPlan",
    "StageMemory",
    "VerificationPlan",
    "WeightsPlan",
    "plan",
]
