"""The ``topology`` and ``model`` sections: the hardware asked for and the model served."""

from __future__ import annotations

from pydantic import Field

from amdfleet.catalog.gpus import ACCELERATORS
from amdfleet.catalog.models import ModelArchitecture, Precision
from amdfleet.config.base import SpecModel


class Topology(SpecModel):
    """The hardware shape the stack asks for; preflight checks the hosts match it."""

    accelerator: str = Field(
        description="Accelerator id from the catalog: mi300x, mi325x, mi350x, mi355x, or "
        "cpu (vLLM's CPU backend, for the local stack).",
        json_schema_extra={"enum": list(ACCELERATORS)},
    )
    nodes: int = Field(1, ge=1, le=64, description="Number of nodes.")
    gpus_per_node: int = Field(
        8, ge=1, le=8, description="Accelerators used on each node (1, 2, 4 or 8)."
    )


class ModelSpec(SpecModel):
    """The model to serve."""

    id: str = Field(
        min_length=1,
        description="Catalog id (e.g. 'llama-3.3-70b-instruct') or a Hugging Face repo "
        "(e.g. 'meta-llama/Llama-3.3-70B-Instruct'); a repo outside the catalog needs "
        "`architecture`.",
    )
    precision: Precision = Field(
        "bf16",
        description="Weight precision: bf16, fp8 (gfx942/gfx950) or mxfp4 (gfx950 only).",
    )
    checkpoint: str | None = Field(
        None,
        description="Override the catalog checkpoint: a Hugging Face repo or an absolute "
        "path on the hosts. A BF16 checkpoint with precision fp8 is quantized online "
        "(`--quantization fp8`).",
    )
    revision: str | None = Field(
        None, description="Hub revision (commit sha, tag or branch) to stage and serve."
    )
    served_name: str | None = Field(
        None, description="Model name clients send; defaults to the checkpoint id."
    )
    architecture: ModelArchitecture | None = Field(
        None, description="Architecture numbers for a model that is not in the catalog."
    )
