"""The Pulumi components: a :class:`Fleet` of checked hosts and a verified
:class:`Deployment` on it.

``Fleet`` (:mod:`.fleet`) registers one :class:`~amdfleet.providers.ssh_host.SshHost`
per node (facts and preflight). ``Deployment`` (:mod:`.deployment`) stages the image and
the weights on every node in parallel once every host has passed preflight (a fleet with
one failing host starts nowhere). The image is one digest on every node
(:func:`~amdfleet.components.images.stage_images`): a build runs once on the build host
and is pushed (:class:`~amdfleet.providers.image_build.EngineImageBuild`), or a pre-built
image's tag is pinned to a digest once (:class:`~amdfleet.providers.image_pin.ImagePin`);
nodes pull that digest and their launch files run it. A multi-node stack then passes the
:class:`~amdfleet.providers.cluster_check.ClusterCheck` (the head's ports reached from
every node, each node's collective interface derived from its facts, the nodes agree)
and, when the stack asks, the :class:`~amdfleet.providers.fabric_check.FabricCheck`,
before any engine starts. One node runs an
:class:`~amdfleet.providers.engine_service.EngineService`; several run one
:class:`~amdfleet.providers.engine_cluster.EngineCluster` (they start, fail and restart
together). The stack counts as ready once a
:class:`~amdfleet.providers.verification.Verification` run against the endpoint passed:
the ``ready`` output is its ``passed``, and a
:class:`~amdfleet.providers.readiness.VerificationGate` fails the update while it is false.
Everything is a child of its component (``parent=self``) and each component registers
its outputs. What each resource is given comes from the plan through :mod:`.props`; the
components only wire resources.
"""

from amdfleet.components.deployment import Deployment, campaign_output
from amdfleet.components.fleet import Fleet
from amdfleet.components.images import StagedImages, stage_images
from amdfleet.components.props import launch_files

__all__ = [
    "Deployment",
    "Fleet",
    "StagedImages",
    "campaign_output",
    "launch_files",
    "stage_images",
]
