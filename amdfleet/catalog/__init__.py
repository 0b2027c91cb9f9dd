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
    IMAGES,
    RECIPES,
    EngineEntry,
    ImageDefault,
    Recipe,
    default_image,
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

__all__ = [
    "ACCELERATORS",
    "BASELINES",
    "CLOUDS",
    "ENGINES",
    "GPU_ARCHS",
    "IMAGES",
    "MODELS",
    "RECIPES",
    "SIZES",
    "WEIGHT_BYTES",
    "Accelerator",
    "Baseline",
    "Checkpoint",
    "CloudDefaults",
    "CloudSize",
    "EngineEntry",
    "ImageDefault",
    "ModelInfo",
    "Recipe",
    "accelerator",
    "baseline",
    "cloud",
    "cloud_size",
    "cloud_sizes",
    "default_image",
    "find_model",
    "param_counts",
    "recipes_for",
    "verified_min_tp",
]
