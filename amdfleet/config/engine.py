"""The ``engine`` and ``parallelism`` sections: what serves the model, and how it is split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from amdfleet.catalog.engines import ENGINES
from amdfleet.config.base import SIZE_RE, EnvVars, Runtime, SpecModel


class EngineSpec(SpecModel):
    """The serving engine and how it is run."""

    name: str = Field(
        "vllm",
        description="Serving engine, one of the catalog's: vllm, sglang or tgi.",
        json_schema_extra={"enum": list(ENGINES)},
    )
    image: str | None = Field(
        None, description="Container image; defaults to the catalog image for engine/arch."
    )
    version: str | None = Field(
        None,
        description="Engine release to run, one the catalog pins (its image, and the manifest "
        "of flags and variables the command is checked against); default: the catalog's "
        "release for the arch. With `image` set, the version that image runs.",
    )
    runtime: Runtime = Field(
        "docker",
        description="'docker' runs the image with ROCm device flags; 'process' runs the "
        "engine executable directly with an env file.",
    )
    executable: str | None = Field(
        None,
        description="Engine command for the process runtime (e.g. '/opt/venv/bin/vllm'); "
        "defaults to the engine's CLI name on PATH.",
    )
    recipe: bool = Field(
        True,
        description="Apply the catalog's recipe flags and env for (engine, arch, "
        "precision); set false to pass only your own extra_args/extra_env.",
    )
    extra_args: tuple[str, ...] = Field(
        (), description="Extra engine arguments, appended last (they win over the recipe)."
    )
    extra_env: EnvVars = Field(
        default_factory=dict, description="Extra environment variables (override recipe)."
    )
    network: Literal["host", "bridge"] = Field(
        "host",
        description="Container network: 'host' (required for multi-node) or 'bridge' with "
        "the serving port published.",
    )
    ipc: Literal["host", "private"] = Field(
        "host", description="Container IPC namespace; 'private' uses `shm_size`."
    )
    shm_size: str = Field(
        "16g", pattern=SIZE_RE, description="Container /dev/shm size when ipc is private."
    )
    startup_timeout_s: int | None = Field(
        None,
        ge=30,
        description="Deadline for /health after start; defaults to one sized to the model.",
    )

    adopt: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*:[0-9]{1,5}$",
        description="Adopt the engine already serving as '<host>:<port>' (a name in "
        "fleet.hosts, the port it serves on) instead of starting one: `pulumi up` imports "
        "it, and restarts it only if it differs from this stack (README 'Adopting a "
        "running engine'). One node, process runtime; remove it once adopted.",
    )

    @field_validator("name")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            names = [f"'{name}'" for name in ENGINES]
            raise ValueError(
                f"unknown engine {value!r} — use {', '.join(names[:-1])} or {names[-1]}"
            )
        return value


class ParallelismSpec(SpecModel):
    """How the model is split over the GPUs: tp × pp × dp must equal nodes × GPUs."""

    tp: int = Field(1, ge=1, description="Tensor-parallel size.")
    pp: int = Field(1, ge=1, description="Pipeline-parallel size (layers split in stages).")
    dp: int = Field(1, ge=1, description="Data-parallel replicas.")
    backend: Literal["mp", "ray"] = Field(
        "mp",
        description="vLLM multi-node executor: 'mp' (multiprocessing, --nnodes/--headless) "
        "or 'ray' (a Ray cluster started first).",
    )
    master_port: int = Field(
        29500, ge=1024, le=65535, description="Rendezvous port on the head node."
    )
    ray_port: int = Field(6379, ge=1024, le=65535, description="Ray GCS port (backend ray).")
