"""A Pulumi program for tests/program/test_cli_images.py: amdfleet's own image staging
(:func:`amdfleet.components.stage_images`) for a planned stack, without the rest of the
deployment (the lab has no GPUs: preflight and the engine are tested elsewhere).

Config (namespace ``imagetest``): ``stackFile`` (a stack YAML planned as ``amdfleet plan``
plans it), ``archs`` (the gfx arch each host's GPUs report, standing in for host facts)
and the secret ``registryPassword``. Outputs: the digest reference every node runs and
each node's staged digest and image id, and each node's rendered launch script.
"""

from __future__ import annotations

import pulumi

from amdfleet.components import launch_files, stage_images
from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from amdfleet.providers.ssh_host import host_facts

config = pulumi.Config("imagetest")
deployment = plan(load_stack_file(config.require("stackFile")).spec)
targets = [node.target for node in deployment.nodes if node.target is not None]
archs = config.require_object("archs")
facts = [host_facts({"gpus": [{"arch": archs[node.name]}]}) for node in deployment.nodes]
secrets = {"registryPassword": config.require_secret("registryPassword")}

staged = stage_images("images", deployment, targets, facts, secrets)
pulumi.export("ref", staged.ref)
pulumi.export("image", deployment.image.image)
pulumi.export(
    "nodes",
    pulumi.Output.all(*[i.digest for i in staged.images], *[i.image_id for i in staged.images]),
)
if staged.ref is not None:
    pulumi.export(
        "launch",
        staged.ref.apply(
            lambda ref: {
                node.name: launch_files(deployment, node, ref)["launch.sh"]["content"]
                for node in deployment.nodes
            }
        ),
    )
