"""The catalog: accelerators, models, engines and published baselines (data + lookups)."""

from amdfleet.catalog.baselines import BASELINES, Baseline, baseline
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
    "ENGINES",
    "GPU_ARCHS",
    "IMAGES",
    "MODELS",
    "RECIPES",
    "WEIGHT_BYTES",
    "Accelerator",
    "Baseline",
    "Checkpoint",
    "EngineEntry",
    "ImageDefault",
    "ModelInfo",
    "Recipe",
    "accelerator",
    "baseline",
    "default_image",
    "find_model",
    "param_counts",
    "recipes_for",
    "verified_min_tp",
]
