"""What one host must provide for a stack: the planner's demand, preflight's yardstick.

Pure data, light to import (the planner uses it without the fact parsers); the checks
that judge collected facts against it live in :mod:`amdfleet.remote.preflight`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from amdfleet.catalog.gpus import ACCELERATORS, Accelerator, accelerator

Runtime = Literal["docker", "process"]

CPU_ACCELERATOR = "cpu"


@dataclass(frozen=True)
class HostRequirement:
    """What one host must provide for a stack.

    ``accelerator`` is a catalog id (its device ids, gfx target and VRAM are the
    expectation; ``"cpu"`` needs no GPU, device node or group). ``gpu_count`` is the
    minimum number of such GPUs. ``weights_bytes`` must fit in the free space of the
    filesystem holding ``weights_dir`` (empty skips the check). ``min_shm_bytes`` is for
    the host's /dev/shm (what a process, or a container run with ``--ipc=host``, gets);
    0 skips that check.
    """

    accelerator: str
    gpu_count: int
    runtime: Runtime = "docker"
    min_shm_bytes: int = 0
    weights_dir: str = ""
    weights_bytes: int = 0
    numa_balancing_off: bool = True
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
