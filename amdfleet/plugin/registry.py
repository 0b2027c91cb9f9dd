"""Every resource type the plugin serves, and the provider instance serving it."""

from __future__ import annotations

from typing import Any

from amdfleet.providers.cloud_instance import CloudInstance
from amdfleet.providers.cluster_check import ClusterCheck
from amdfleet.providers.command_check import EngineCommandCheck
from amdfleet.providers.engine_cluster import EngineCluster
from amdfleet.providers.engine_image import EngineImage
from amdfleet.providers.engine_service import EngineService
from amdfleet.providers.fabric_check import FabricCheck
from amdfleet.providers.image_build import EngineImageBuild
from amdfleet.providers.image_pin import ImagePin
from amdfleet.providers.model_weights import ModelWeights
from amdfleet.providers.readiness import VerificationGate
from amdfleet.providers.resource import AmdFleetResource, type_token
from amdfleet.providers.ssh_host import SshHost
from amdfleet.providers.verification import Verification

RESOURCES: tuple[type[AmdFleetResource], ...] = (
    SshHost,
    CloudInstance,
    ClusterCheck,
    FabricCheck,
    EngineImage,
    EngineImageBuild,
    ImagePin,
    ModelWeights,
    EngineService,
    EngineCluster,
    EngineCommandCheck,
    Verification,
    VerificationGate,
)
"""The custom resources of the ``amdfleet`` package."""


def providers() -> dict[str, Any]:
    """Type token → the provider instance that serves it (providers are stateless, so
    one instance serves every call of its type)."""
    return {type_token(r.type_name): r.provider_class() for r in RESOURCES}
