"""Models amdfleet knows: architecture numbers for memory math, and checkpoints.

Architecture numbers are those of each model's ``config.json`` on the Hugging Face hub
(all Llama 3.1/3.3 sizes share vocab 128256, head dim 128, 8 KV heads and a 131072-token
context). Parameter counts are computed from them, so the memory math and the
catalog cannot drift apart.

Checkpoints are listed per precision, with the archs they run on:
- BF16: Meta's originals (gated: a Hugging Face token with the licence accepted).
- FP8: AMD's ``amd/*-FP8-KV`` (FP8 weights, activations and KV-cache scales, made with
  Quark) run on gfx942 and gfx950.
- MXFP4: AMD's ``amd/*-MXFP4-Preview`` run on gfx950 only (MI350X/MI355X have MXFP4
  matrix cores; gfx942 does not).
- Meta's ``meta-llama/Llama-3.1-405B-Instruct-FP8`` is FBGEMM row-wise FP8, which vLLM
  runs only on NVIDIA; it is listed as unusable on ROCm so a stack asking for it is
  rejected with the AMD checkpoint as the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["bf16", "fp8", "mxfp4"]
"""Weight precisions the catalog lists checkpoints for (and a stack may ask for)."""


class ModelArchitecture(BaseModel):
    """Architecture numbers for a model the catalog does not know (memory math needs them).

    The catalog describes its own models with it, and a stack's ``model.architecture``
    gives them for a model outside the catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    params_b: float = Field(gt=0, description="Parameters, in billions.")
    layers: int = Field(ge=1, description="Transformer layers.")
    hidden: int = Field(ge=1, description="Hidden size.")
    intermediate: int = Field(ge=1, description="MLP intermediate size.")
    heads: int = Field(ge=1, description="Attention heads.")
    kv_heads: int = Field(ge=1, description="Key/value heads (GQA groups).")
    head_dim: int = Field(ge=1, description="Per-head dimension.")
    vocab: int = Field(ge=1, description="Vocabulary size.")
    max_context: int = Field(ge=1, description="Maximum context length, tokens.")


# Bytes per weight element as stored. MXFP4 is 4-bit elements plus one 8-bit shared
# scale per 32 elements (OCP MX spec): 4.25 bits.
WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "mxfp4": 4.25 / 8}


@dataclass(frozen=True)
class Checkpoint:
    """One set of weights on the hub."""

    repo: str
    precision: Precision
    archs: tuple[str, ...]
    gated: bool
    usable: bool = True
    why_unusable: str = ""
    use_instead: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """A model family member with its architecture and checkpoints."""

    id: str
    name: str
    base_repo: str
    arch: ModelArchitecture
    checkpoints: tuple[Checkpoint, ...] = field(default=())

    def checkpoint_for(self, precision: str, arch: str) -> Checkpoint | None:
        """The usable checkpoint stored at ``precision`` that runs on ``arch``."""
        for ckpt in self.checkpoints:
            if ckpt.precision == precision and ckpt.usable and arch in ckpt.archs:
                return ckpt
        return None

    def find_checkpoint(self, repo: str) -> Checkpoint | None:
        """The catalog entry for a checkpoint repo (any precision), if listed."""
        return next((c for c in self.checkpoints if c.repo.lower() == repo.lower()), None)


def param_counts(arch: ModelArchitecture) -> tuple[float, float]:
    """(linear-layer params, other params) of a Llama-style decoder.

    Linear layers (attention q/k/v/o and the three MLP projections) are what FP8/MXFP4
    checkpoints quantize; embeddings, the LM head and norms stay in BF16.
    """
    q_o = 2 * arch.hidden * arch.heads * arch.head_dim
    k_v = 2 * arch.hidden * arch.kv_heads * arch.head_dim
    mlp = 3 * arch.hidden * arch.intermediate
    linear = arch.layers * (q_o + k_v + mlp)
    other = 2 * arch.vocab * arch.hidden + (2 * arch.layers + 1) * arch.hidden
    return float(linear), float(other)


def _llama(layers: int, hidden: int, intermediate: int, heads: int) -> ModelArchitecture:
    shape = dict(
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_heads=8,
        head_dim=128,
        vocab=128256,
        max_context=131072,
    )
    probe = ModelArchitecture(params_b=1.0, **shape)
    linear, other = param_counts(probe)
    return ModelArchitecture(params_b=round((linear + other) / 1e9, 2), **shape)


_GPU = ("gfx942", "gfx950")
_BF16_ARCHS = (*_GPU, "cpu")


def _meta(repo: str) -> Checkpoint:
    return Checkpoint(repo, "bf16", _BF16_ARCHS, gated=True)


def _amd_fp8(repo: str) -> Checkpoint:
    return Checkpoint(repo, "fp8", _GPU, gated=False)


MODELS: dict[str, ModelInfo] = {
    m.id: m
    for m in (
        ModelInfo(
            id="llama-3.1-8b-instruct",
            name="Llama 3.1 8B Instruct",
            base_repo="meta-llama/Llama-3.1-8B-Instruct",
            arch=_llama(32, 4096, 14336, 32),
            checkpoints=(
                _meta("meta-llama/Llama-3.1-8B-Instruct"),
                _amd_fp8("amd/Llama-3.1-8B-Instruct-FP8-KV"),
            ),
        ),
        ModelInfo(
            id="llama-3.1-70b-instruct",
            name="Llama 3.1 70B Instruct",
            base_repo="meta-llama/Llama-3.1-70B-Instruct",
            arch=_llama(80, 8192, 28672, 64),
            checkpoints=(
                _meta("meta-llama/Llama-3.1-70B-Instruct"),
                _amd_fp8("amd/Llama-3.1-70B-Instruct-FP8-KV"),
            ),
        ),
        ModelInfo(
            id="llama-3.1-405b-instruct",
            name="Llama 3.1 405B Instruct",
            base_repo="meta-llama/Llama-3.1-405B-Instruct",
            arch=_llama(126, 16384, 53248, 128),
            checkpoints=(
                _meta("meta-llama/Llama-3.1-405B-Instruct"),
                _amd_fp8("amd/Llama-3.1-405B-Instruct-FP8-KV"),
                Checkpoint(
                    "meta-llama/Llama-3.1-405B-Instruct-FP8",
                    "fp8",
                    (),
                    gated=True,
                    usable=False,
                    why_unusable="Meta's FP8 checkpoint uses FBGEMM row-wise FP8 kernels "
                    "that vLLM provides only on NVIDIA GPUs",
                    use_instead="amd/Llama-3.1-405B-Instruct-FP8-KV",
                ),
            ),
        ),
        ModelInfo(
            id="llama-3.3-70b-instruct",
            name="Llama 3.3 70B Instruct",
            base_repo="meta-llama/Llama-3.3-70B-Instruct",
            arch=_llama(80, 8192, 28672, 64),
            checkpoints=(
                _meta("meta-llama/Llama-3.3-70B-Instruct"),
                _amd_fp8("amd/Llama-3.3-70B-Instruct-FP8-KV"),
                Checkpoint("amd/Llama-3.3-70B-Instruct-MXFP4-Preview", "mxfp4", ("gfx950",), False),
            ),
        ),
    )
}


def find_model(model_id: str) -> ModelInfo | None:
    """Look a model up by catalog id, base repo or any checkpoint repo (case-insensitive)."""
    key = model_id.lower().rstrip("/")
    for info in MODELS.values():
        if key in (info.id, info.base_repo.lower()) or info.find_checkpoint(key):
            return info
    return None
