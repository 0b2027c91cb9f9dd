"""The ``fabric`` section: the optional collective-bandwidth test across the nodes."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from amdfleet.config.base import SIZE_RE, EnvVars, SpecModel


def _size_or_bytes(schema: dict[str, Any]) -> None:
    # The sizes' validator also takes a plain number of bytes, as YAML reads `8`.
    schema["anyOf"] = [
        {"type": "string", "pattern": SIZE_RE},
        {"type": "integer", "minimum": 1},
        {"type": "null"},
    ]


class FabricSpec(SpecModel):
    """An optional collective-bandwidth test across the nodes, run before the engine starts:
    rccl-tests' ``all_reduce_perf`` on GPU fleets, a ``torch.distributed`` gloo all-reduce
    sweep on CPU stacks; both gated on the bus bandwidth at one message size.

    Sizes use all_reduce_perf's own syntax (``-b``/``-e``): bytes, or a number with K, M
    or G meaning 1024, 1024² or 1024³ bytes. The sweep doubles from min_size to max_size
    (``-f 2``), so gate_size must be min_size times a power of two, at most max_size.
    """

    enabled: bool = Field(
        False, description="Run the fabric check on every node before the engine starts."
    )
    min_busbw_gbps: float | None = Field(
        None,
        gt=0,
        description="Minimum in-place bus bandwidth, GB/s (10^9 bytes/s), at gate_size; null "
        "records the sweep without gating. AMD's acceptance guide asks >= 304 GB/s for "
        "MI300X/MI325X and >= 350 GB/s for MI350X/MI355X at 8 GB on one 8-GPU node.",
    )
    min_size: str | None = Field(
        None,
        json_schema_extra=_size_or_bytes,
        description="Smallest message of the sweep (all_reduce_perf -b); default 8 on GPU "
        "fleets (AMD's acceptance command), 1K on CPU.",
    )
    max_size: str | None = Field(
        None,
        json_schema_extra=_size_or_bytes,
        description="Largest message of the sweep (all_reduce_perf -e); default 8G on GPU "
        "fleets, 64M on CPU.",
    )
    gate_size: str | None = Field(
        None,
        json_schema_extra=_size_or_bytes,
        description="Message size whose in-place busbw is gated: a size of the sweep; default "
        "8G on GPU fleets (where AMD's thresholds apply), max_size on CPU.",
    )
    iters: int = Field(20, ge=1, le=1000, description="Timed iterations per size (-n).")
    warmup_iters: int = Field(5, ge=0, le=1000, description="Warm-up iterations (-w).")
    timeout_s: int = Field(
        1800, ge=30, description="Deadline for the whole check on every node, seconds."
    )
    port: int = Field(
        29700,
        ge=1024,
        le=65535,
        description="TCP port of the gloo rendezvous on the head (CPU stacks).",
    )
    all_reduce_perf: str = Field(
        "all_reduce_perf",
        min_length=1,
        description="rccl-tests' all_reduce_perf in the engine image (docker runtime) or on "
        "the hosts (process runtime): a path, or a name on PATH.",
    )
    mpirun: str = Field(
        "mpirun",
        min_length=1,
        description="OpenMPI's mpirun for multi-node GPU fleets, run on the head (in the "
        "engine image with the docker runtime). It starts the other nodes' ranks itself (over "
        "ssh unless mpirun_args say otherwise): the head must reach them that way and find "
        "all_reduce_perf at the same path there.",
    )
    mpirun_args: tuple[str, ...] = Field(
        (),
        description="Extra mpirun arguments for the fabric, e.g. ['--mca', 'pml', 'ucx'] as "
        "the recorded AAC10 2-node MI300X run used.",
    )
    extra_env: EnvVars = Field(
        default_factory=dict,
        description="Environment for every rank (e.g. NCCL_IB_GID_INDEX: '3'); the nodes' "
        "NCCL/GLOO_SOCKET_IFNAME and NCCL_IB_HCA come from fleet.hosts.",
    )

    @field_validator("min_size", "max_size", "gate_size", mode="before")
    @classmethod
    def _size_form(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip()
        if not re.fullmatch(SIZE_RE, text):
            raise ValueError(
                f"size {value!r} is not a size all_reduce_perf reads — use bytes (8) or a "
                "number with K, M or G (1K = 1024 bytes, 8G = 8 GiB)"
            )
        return text


def size_bytes(size: str) -> int:
    """A size in all_reduce_perf's syntax as bytes (K, M and G are powers of 1024, as
    rccl-tests' ``parsesize`` reads them)."""
    text = size.strip()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    scale = units.get(text[-1].lower(), 1)
    return int(text.rstrip("kmgKMG")) * scale
