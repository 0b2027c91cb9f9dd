"""The catalog: accelerators, models, engines and published baselines (data + lookups)."""

from amdfleet.catalog.baselines import BASELINES, Baseline, baseline
from amdfleet.catalog.clouds import (
    CLOUDS,
    SIZES,
    CloudDefaults,
    CloudSize,
    cloud,
    cloud_size,
    cloud_sizes,
)
from amdfleet.catalog.engines import (
    ENGINES,
    RECIPES,
    EngineEntry,
    Recipe,
    recipes_for,
    verified_min_tp,
)
from amdfleet.catalog.gpus import ACCELERATORS, GPU_ARCHS, Accelerator, accelerator
from amdfleet.catalog.models import (
    MODELS,
    WEIGHT_BYTES,
    Checkpoint,
    ModelInfo,
    find_model,
    param_counts,
)
from amdfleet.catalog.releases import (
    RELEASES,
    Release,
    SourcePin,
    moving_tag,
    release,
    source_pin,
    versions,
)

__all__ = [
    "ACCELERATORS",
    "BASELINES",
    "CLOUDS",
    "ENGINES",
    "GPU_ARCHS",
    "MODELS",
    "RECIPES",
    "RELEASES",
    "SIZES",
    "WEIGHT_BYTES",
    "Accelerator",
    "Baseline",
    "Checkpoint",
    "CloudDefaults",
    "CloudSize",
    "EngineEntry",
    "ModelInfo",
    "Recipe",
    "Release",
    "SourcePin",
    "accelerator",
    "baseline",
    "cloud",
    "cloud_size",
    "cloud_sizes",
    "find_model",
    "moving_tag",
    "param_counts",
    "recipes_for",
    "release",
    "source_pin",
    "verified_min_tp",
    "versions",
]
