"""The fabric check's plan: which collective test runs before the engine, over which
message sizes, gated how (issue 10, item 7).

GPU fleets run rccl-tests' ``all_reduce_perf``; CPU stacks run a ``torch.distributed``
gloo all-reduce sweep (:mod:`amdfleet.remote.fabric` builds both commands). Defaults
follow AMD's acceptance command ``all_reduce_perf -b 8 -e 8G -f 2 -g 8``, gated at 8 GiB
(the guide's "8 GB": rccl-tests reads ``8G`` as 8·1024³ bytes, the row it gates prints
8589934592); a CPU stack sweeps 1K..64M, small enough for a few cores.
"""

from __future__ import annotations

from amdfleet.catalog.gpus import Accelerator
from amdfleet.config import FabricSpec, StackSpec, size_bytes
from amdfleet.findings import Finding, config_issue
from amdfleet.plan.models import REMOTE_ROOT, FabricPlan
from amdfleet.remote.fabric import size_label
from amdfleet.remote.fabric_gloo import sweep

GPU_SIZES = ("8", "8G", "8G")
"""min, max and gate sizes on GPU fleets: AMD's acceptance command and gate."""
CPU_SIZES = ("1K", "64M", "64M")
"""min, max and gate sizes on CPU stacks."""
ELEMENT_BYTES = 4
"""Both tests reduce float32 elements."""


def fabric_issues(spec: StackSpec, acc: Accelerator) -> list[Finding]:
    """What makes an enabled fabric check impossible: a sweep that never reaches the gate
    size, a CPU stack with a single node (gloo needs two), a rendezvous port in use."""
    fabric = spec.fabric
    if not fabric.enabled:
        return []
    issues = _size_issues(fabric, _is_cpu(acc))
    if _is_cpu(acc):
        if spec.topology.nodes < 2:
            issues.append(
                config_issue(
                    "fabric.enabled",
                    "a CPU stack with one node has no fabric to test (the gloo sweep runs "
                    "one rank per node and needs two)",
                    "set fabric.enabled: false, or add a second host to fleet.hosts",
                )
            )
        issues += _port_issues(spec)
    return issues


def fabric_plan(
    spec: StackSpec, acc: Accelerator, image: str | None, python: str
) -> FabricPlan | None:
    """The fabric check as planned, None when disabled. ``image`` is the engine image
    (docker runtime), ``python`` the engine's Python (it runs the gloo sweep)."""
    fabric = spec.fabric
    if not fabric.enabled:
        return None
    low, high, gate = _sizes(fabric, _is_cpu(acc))
    return FabricPlan(
        kind="gloo" if _is_cpu(acc) else "rccl",
        min_bytes=low,
        max_bytes=high,
        gate_bytes=gate,
        min_busbw_gbps=fabric.min_busbw_gbps,
        iters=fabric.iters,
        warmup_iters=fabric.warmup_iters,
        timeout_s=fabric.timeout_s,
        port=fabric.port,
        python=python if spec.engine.runtime == "process" else "python3",
        all_reduce_perf=fabric.all_reduce_perf,
        mpirun=fabric.mpirun,
        mpirun_args=fabric.mpirun_args,
        extra_env=dict(sorted(fabric.extra_env.items())),
        image=image if spec.engine.runtime == "docker" else None,
        work_dir=f"{REMOTE_ROOT}/{spec.name}-fabric",
        container_name=f"amdfleet-{spec.name}-fabric",
    )


def _is_cpu(acc: Accelerator) -> bool:
    return acc.arch == "cpu"


def _sizes(fabric: FabricSpec, cpu: bool) -> tuple[int, int, int]:
    low, high, gate = CPU_SIZES if cpu else GPU_SIZES
    if fabric.max_size is not None and fabric.gate_size is None and cpu:
        gate = fabric.max_size
    return (
        size_bytes(fabric.min_size or low),
        size_bytes(fabric.max_size or high),
        size_bytes(fabric.gate_size or gate),
    )


def _size_issues(fabric: FabricSpec, cpu: bool) -> list[Finding]:
    low, high, gate = _sizes(fabric, cpu)
    if low < ELEMENT_BYTES:
        return [
            config_issue(
                "fabric.min_size",
                f"{size_label(low)} is less than one float32 element ({ELEMENT_BYTES} bytes)",
                "use a min_size of at least 4 (AMD's acceptance command uses 8)",
            )
        ]
    if low > high:
        return [
            config_issue(
                "fabric.max_size",
                f"the sweep ends at {size_label(high)}, before it starts ({size_label(low)})",
                "make max_size at least min_size",
            )
        ]
    sizes = sweep(low, high)
    if gate in sizes:
        return []
    named = "gate_size" if fabric.gate_size else "the default gate size"
    where = "above max_size" if gate > high else "not min_size times a power of two"
    return [
        config_issue(
            "fabric.gate_size",
            f"{named} {size_label(gate)} is {where}, so the sweep {size_label(low)} .. "
            f"{size_label(high)} (doubling) never measures it",
            f"use one of the sweep's sizes ({_span(sizes)}), or change min_size/max_size",
        )
    ]


def _span(sizes: list[int]) -> str:
    shown = [str(s) for s in sizes]
    return ", ".join(shown) if len(shown) <= 6 else f"{', '.join(shown[:3])}, ..., {shown[-1]}"


def _port_issues(spec: StackSpec) -> list[Finding]:
    """The gloo rendezvous port against the ports the engine and SSH use: the check may
    run while an engine from an earlier update still holds them."""
    port = spec.fabric.port
    taken = {
        spec.serving.port: "serving.port (the API)",
        spec.parallelism.master_port: "parallelism.master_port (the engine's rendezvous)",
    }
    if spec.parallelism.backend == "ray":
        taken.setdefault(spec.parallelism.ray_port, "parallelism.ray_port (the Ray GCS)")
    for host in spec.fleet.hosts:
        if host.connection == "ssh":
            taken.setdefault(host.port, f"host '{host.name}''s SSH port")
    if port not in taken:
        return []
    return [
        config_issue(
            "fabric.port",
            f"the fabric check's rendezvous port {port} is also {taken[port]}",
            "pick another fabric.port (default 29700)",
        )
    ]
