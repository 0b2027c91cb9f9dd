"""Model shapes the tests plan with (the memory math needs an architecture for a model
outside the catalog)."""

from __future__ import annotations

from typing import Any

# The tiny Llama's shape (2 layers, hidden 128): what scripts/build-tiny-llama builds and
# the stand-in engine pretends to serve.
TINY_ARCHITECTURE: dict[str, Any] = {
    "params_b": 0.001,
    "layers": 2,
    "hidden": 128,
    "intermediate": 256,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 32,
    "vocab": 4096,
    "max_context": 4096,
}
