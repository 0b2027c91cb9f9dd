"""The whole stack: one ``Pulumi.<stack>.yaml`` under ``stacks/``, one field per section."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from amdfleet.config.base import NAME_RE, SpecModel
from amdfleet.config.engine import EngineSpec, ParallelismSpec
from amdfleet.config.fabric import FabricSpec
from amdfleet.config.fleet import FleetSpec
from amdfleet.config.image_build import ImageBuildSpec
from amdfleet.config.lifetime import LifetimeSpec
from amdfleet.config.model import ModelSpec, Topology
from amdfleet.config.serving import ServingSpec
from amdfleet.config.verification import VerificationSpec
from amdfleet.config.weights import WeightsSpec


class StackSpec(SpecModel):
    """A whole stack: one `Pulumi.<stack>.yaml` under `stacks/`."""

    name: str = Field(pattern=NAME_RE, description="Stack name.")
    description: str = Field("", description="One line saying what the stack runs.")
    fleet: FleetSpec = Field(description="Hosts or cloud instances.")
    topology: Topology = Field(description="Accelerator model and counts.")
    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Serving engine.")
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec, description="TP/PP/DP layout."
    )
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Endpoint.")
    image_build: ImageBuildSpec = Field(
        default_factory=ImageBuildSpec, description="Optional image build."
    )
    weights: WeightsSpec = Field(default_factory=WeightsSpec, description="Weight staging.")
    verification: VerificationSpec = Field(
        default_factory=VerificationSpec, description="Benchmark + accuracy gate."
    )
    campaign: LifetimeSpec = Field(
        default_factory=LifetimeSpec, description="Lifetime and teardown policy."
    )
    fabric: FabricSpec = Field(
        default_factory=FabricSpec,
        description="Optional collective-bandwidth test across the nodes before deploying.",
    )

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """Names of the secret config keys this stack needs (a registry's password only
        when the image is built)."""
        needed = [p for p in SECRET_KEY_FIELDS if p[0] != "image_build" or self.image_build.enabled]
        keys = [_value_at(self, path) for path in needed]
        return tuple(k for k in keys if k)


SECRET_KEY_FIELDS: tuple[tuple[str, ...], ...] = (
    ("serving", "api_key_secret"),
    ("weights", "hf_token_secret"),
    ("image_build", "registry", "password_secret"),
    ("fleet", "cloud", "api_token_secret"),
)
"""Where a stack names its secret config keys (each field holds a key's name, never its
value), in the order :attr:`StackSpec.secret_keys` lists them."""


SECTIONS: tuple[str, ...] = tuple(
    name for name in StackSpec.model_fields if name not in ("name", "description")
)


def _value_at(spec: StackSpec, path: tuple[str, ...]) -> str | None:
    node: Any = spec
    for part in path:
        node = getattr(node, part, None)
    return node if isinstance(node, str) else None
