"""What one host must provide for a stack: the planner's demand, preflight's yardstick.

Pure data, light to import (the planner uses it without the fact parsers); the checks
that judge collected facts against it live in :mod:`amdfleet.remote.preflight`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from amdfleet.catalog.gpus import ACCELERATORS, Accelerator, accelerator

Runtime = Literal["docker", "process"]

CPU_ACCELERATOR = "cpu"


@dataclass(frozen=True)
class HostRequirement:
    """What one host must provide for a stack (preflight checks each field)."""

    # How pydantic reads it inside a props model (an SshHost's ``requirement``): unknown
    # keys rejected, as everywhere in props, and the attribute docstrings as the fields'
    # descriptions (the package schema's, amdfleet.plugin.schema).
    __pydantic_config__: ClassVar[dict[str, Any]] = {
        "extra": "forbid",
        "use_attribute_docstrings": True,
    }

    accelerator: str
    """A catalog accelerator id: its device ids, gfx target and VRAM are the expectation;
    ``"cpu"`` needs no GPU, device node or group."""
    gpu_count: int
    """The minimum number of such GPUs."""
    runtime: Runtime = "docker"
    """How the engine runs: a container (docker must work) or a host process."""
    min_shm_bytes: int = 0
    """The least size of the host's /dev/shm (what a process, or a container run with
    ``--ipc=host``, gets); 0 skips that check."""
    weights_dir: str = ""
    """The directory the weights are staged in (empty skips the disk-room check)."""
    weights_bytes: int = 0
    """The weights' size, which must fit in the free space of the filesystem holding
    ``weights_dir``."""
    numa_balancing_off: bool = True
    """Whether NUMA balancing must be off (AMD's recommendation for Instinct GPUs)."""
    cpu_dtype: str | None = None
    """The dtype a CPU engine computes in (the CPU stack only): bfloat16 needs a CPU with
    native bfloat16 (avx512_bf16 or amx_bf16)."""

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            known = ", ".join(sorted(ACCELERATORS))
            raise ValueError(f"unknown accelerator {self.accelerator!r} (known: {known})")
        if min(self.gpu_count, self.min_shm_bytes, self.weights_bytes) < 0:
            raise ValueError("gpu_count, min_shm_bytes and weights_bytes must be >= 0")

    @property
    def expected(self) -> Accelerator:
        """The catalog entry this requirement asks for."""
        return accelerator(self.accelerator)

    @property
    def needs_gpus(self) -> bool:
        """False for the CPU stack: no GPU, /dev/kfd, /dev/dri or group checks."""
        return self.accelerator != CPU_ACCELERATOR
