"""The stack schema: what a user writes in ``stacks/Pulumi.<stack>.yaml``.

A stack file is an ordinary Pulumi stack configuration. Each section of
:class:`StackSpec` is one structured config key in the ``amdfleet`` namespace
(``amdfleet:fleet``, ``amdfleet:model``, ...), and each section's schema is one module
of this package (:mod:`.fleet`, :mod:`.cloud`, :mod:`.model`, :mod:`.engine`,
:mod:`.serving`, :mod:`.image_build`, :mod:`.weights`, :mod:`.verification`,
:mod:`.lifetime`, :mod:`.fabric`; :mod:`.stack` puts them together). :mod:`.loader`
reads a stack through ``pulumi.Config`` or from its file, and handles its secrets;
:mod:`.json_schema` writes a stack file's JSON Schema for editors (``amdfleet schema``).

Every model is frozen and ``extra="forbid"``: a typo'd key is an error that names the
field path and suggests the nearest valid name. The public names are re-exported here,
so ``from amdfleet.config import StackSpec`` works.
"""

from __future__ import annotations

from amdfleet.catalog.models import ModelArchitecture, Precision
from amdfleet.config.base import Runtime
from amdfleet.config.cloud import CloudFleetSpec
from amdfleet.config.engine import EngineSpec, ParallelismSpec
from amdfleet.config.fabric import FabricSpec, size_bytes
from amdfleet.config.fleet import FleetSpec, HostSpec
from amdfleet.config.image_build import BuildHost, ImageBuildSpec, RegistrySpec
from amdfleet.config.lifetime import LifetimeSpec
from amdfleet.config.loader import (
    NAMESPACE,
    STACKS_DIR,
    LoadedStack,
    SecretRef,
    load_from_pulumi,
    load_from_values,
    load_stack_file,
    parse_stack,
    stack_names,
    stack_path,
)
from amdfleet.config.model import ModelSpec, Topology
from amdfleet.config.serving import ServingSpec
from amdfleet.config.stack import SECTIONS, StackSpec
from amdfleet.config.verification import (
    AccuracySpec,
    BenchmarkScenario,
    ParitySpec,
    Thresholds,
    VerificationSpec,
)
from amdfleet.config.weights import WeightsSpec

__all__ = [
    "NAMESPACE",
    "SECTIONS",
    "STACKS_DIR",
    "AccuracySpec",
    "BenchmarkScenario",
    "BuildHost",
    "CloudFleetSpec",
    "EngineSpec",
    "FabricSpec",
    "FleetSpec",
    "HostSpec",
    "ImageBuildSpec",
    "LifetimeSpec",
    "LoadedStack",
    "ModelArchitecture",
    "ModelSpec",
    "ParallelismSpec",
    "ParitySpec",
    "Precision",
    "RegistrySpec",
    "Runtime",
    "SecretRef",
    "ServingSpec",
    "StackSpec",
    "Thresholds",
    "Topology",
    "VerificationSpec",
    "WeightsSpec",
    "load_from_pulumi",
    "load_from_values",
    "load_stack_file",
    "parse_stack",
    "size_bytes",
    "stack_names",
    "stack_path",
]
