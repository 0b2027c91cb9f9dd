"""The fabric check: command builders, the all_reduce_perf parser and the bandwidth gate.

Pure, pyinfra style: the builders return shell text for ``Connection.run``, the parser
reads what the command printed, the gate decides. Nothing here runs anything.

Two tests print the same table, so one parser and one gate serve both:

* GPU fleets run rccl-tests' ``all_reduce_perf`` (the ROCm fork of nccl-tests). One
  node: ``all_reduce_perf -b MIN -e MAX -f 2 -g GPUS`` (AMD's acceptance command,
  system-acceptance-docs ``docs/common/rccl-benchmarking.md``: ``-b 8 -e 8G -f 2 -g 8``),
  in the engine image with the engine's ROCm device flags. Several nodes: one rank per
  GPU under OpenMPI's ``mpirun`` from the head (:func:`mpirun_argv`, the form of the
  recorded multi-node runs in ``fixtures/rccl-tests``).
* CPU stacks run :mod:`amdfleet.remote.fabric_gloo` (a torch.distributed gloo sweep) on
  every node with the engine's Python; rank 0 prints all_reduce_perf's table.

The gate (:func:`evaluate_gate`) reads the in-place busbw at one message size (AMD's
criterion is "in-place busbw ... at a message size of 8 GB") and fails a run whose
validation found wrong elements.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from amdfleet.addresses import host_port
from amdfleet.errors import AmdFleetError

GLOO_SCRIPT = Path(__file__).with_name("fabric_gloo.py")
"""The gloo sweep's source: uploaded to every node of a CPU stack and run there."""
KILL_GRACE_S = 10
"""``timeout -k``: how long a timed-out test gets between SIGTERM and SIGKILL."""
NCCL_ENV_PREFIXES = ("NCCL_", "RCCL_", "UCX_")
"""Node environment passed to the ranks of an rccl-tests run (the engine's own network
settings, e.g. ``NCCL_SOCKET_IFNAME`` and ``NCCL_IB_HCA``)."""
GLOO_ENV_PREFIXES = ("GLOO_",)
"""Node environment passed to a gloo rank (``GLOO_SOCKET_IFNAME``)."""
GIB = 1024**3

_FAILURE = re.compile(r"\bTest (?:\w+ )?failure\b|\bNCCL WARN\b|\bRCCL WARN\b")
_AVG = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*([0-9.eE+-]+)")
_RANK = re.compile(r"^#\s*Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(\S+)\s+device\b")
_OOB = re.compile(r"^#\s*Out of bounds values\s*:\s*(\d+)\s*(\w+)?")
_T = TypeVar("_T")


class AllReducePerfError(ValueError):
    """all_reduce_perf's output holds no result: the test failed (``lines`` are the lines
    saying so) or printed no row (``lines`` is empty)."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        self.lines = tuple(lines)
        shown = "".join(f"\n    | {line}" for line in self.lines)
        super().__init__(message + shown)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Measurement:
    """One column group of a row: out-of-place or in-place."""

    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None
    """Wrong elements after the validated run; None where the test printed ``N/A``."""


@dataclass(frozen=True)
class AllReduceRow:
    """One message size of the sweep."""

    size_bytes: int
    count: int
    type: str
    redop: str
    root: int | None
    out_of_place: Measurement
    in_place: Measurement

    @property
    def wrong(self) -> int:
        """Wrong elements in either measurement."""
        return (self.out_of_place.wrong or 0) + (self.in_place.wrong or 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, for a Pulumi output."""
        return asdict(self)


@dataclass(frozen=True)
class AllReduceResult:
    """A parsed all_reduce_perf table; ``avg_busbw_gbps`` and ``out_of_bounds`` are None
    when the output lacks those lines (a partial capture)."""

    rows: tuple[AllReduceRow, ...]
    avg_busbw_gbps: float | None
    out_of_bounds: int | None
    rank_hosts: tuple[str, ...] = ()
    """The host of each rank listed under "Using devices" (as far as the output lists them)."""

    def row(self, size_bytes: int) -> AllReduceRow | None:
        """The last row of ``size_bytes``, or None."""
        found = [r for r in self.rows if r.size_bytes == size_bytes]
        return found[-1] if found else None


# --------------------------------------------------------------------------- parsing


def parse_all_reduce_perf(text: str) -> AllReduceResult:
    """Read all_reduce_perf's output (nccl-tests layout, whatever the whitespace).

    A row is a line of 13 fields ``size count type redop root`` + (``time algbw busbw
    #wrong``) × 2, or 12 fields (nccl-tests before the ``root`` column); ``#wrong`` may be
    ``N/A``. Every other line (headers, rank lines, version block, ``...`` elisions, mpirun
    noise) is skipped. Raises AllReducePerfError with the failure lines when the test
    reports a failure (``Test NCCL failure``, ``Test failure``, ``NCCL WARN``), and when
    it printed no row at all.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    failures = [line.strip() for line in lines if _FAILURE.search(line)]
    if failures:
        raise AllReducePerfError("all_reduce_perf reported a failure:", failures)
    rows = tuple(row for row in (_row(line) for line in lines) if row is not None)
    if not rows:
        raise AllReducePerfError("all_reduce_perf printed no result row", [])
    return AllReduceResult(
        rows=rows,
        avg_busbw_gbps=_last(_AVG, lines, float),
        out_of_bounds=_last(_OOB, lines, int),
        rank_hosts=_ranks(lines),
    )


def _row(line: str) -> AllReduceRow | None:
    fields = line.split()
    if len(fields) not in (12, 13) or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    root: int | None = None
    if len(fields) == 13:
        root = _int(fields[4])
        if root is None:
            return None
    rest = fields[-8:]
    try:
        out_of_place = _measurement(rest[:4])
        in_place = _measurement(rest[4:])
    except ValueError:
        return None
    return AllReduceRow(
        size_bytes=int(fields[0]),
        count=int(fields[1]),
        type=fields[2],
        redop=fields[3],
        root=root,
        out_of_place=out_of_place,
        in_place=in_place,
    )


def _measurement(fields: Sequence[str]) -> Measurement:
    time_us, algbw, busbw, wrong = fields
    return Measurement(
        time_us=float(time_us),
        algbw_gbps=float(algbw),
        busbw_gbps=float(busbw),
        wrong=None if wrong == "N/A" else int(float(wrong)),
    )


def _int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def _last(
    pattern: re.Pattern[str], lines: Sequence[str], convert: Callable[[str], _T]
) -> _T | None:
    """The first group of the last line ``pattern`` matches (the summary lines at the end
    of the table), converted."""
    for line in reversed(lines):
        match = pattern.match(line.strip())
        if match:
            return convert(match.group(1))
    return None


def _ranks(lines: Sequence[str]) -> tuple[str, ...]:
    hosts: dict[int, str] = {}
    for line in lines:
        match = _RANK.match(line.strip())
        if match:
            hosts[int(match.group(1))] = match.group(2)
    return tuple(hosts[rank] for rank in sorted(hosts))


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision for one set of nodes tested together."""

    hosts: tuple[str, ...]
    gate_bytes: int
    threshold_gbps: float | None
    busbw_gbps: float | None
    """In-place busbw at ``gate_bytes``; None when the sweep has no such row."""
    wrong: int
    passed: bool
    reason: str
    """Why it failed ("" when it passed)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, for a Pulumi output."""
        return asdict(self)


class FabricCheckFailed(AmdFleetError):
    """The fabric check ran but a set of nodes missed the gate: each failure names the
    nodes, the expected bus bandwidth and the observed one."""

    def __init__(self, verdicts: Sequence[GateVerdict]) -> None:
        self.verdicts = tuple(verdicts)
        lines = ["fabric check failed:"]
        lines += [f"  - [{'+'.join(v.hosts)}] {v.reason}" for v in self.verdicts]
        lines.append(
            "  hint: check the links between the nodes (NCCL_SOCKET_IFNAME / "
            "GLOO_SOCKET_IFNAME in fleet.hosts[].network_interface, NCCL_IB_HCA in "
            "rdma_devices), or lower fabric.min_busbw_gbps if the fabric is known slower"
        )
        super().__init__("\n".join(lines))


def evaluate_gate(
    result: AllReduceResult,
    gate_bytes: int,
    threshold_gbps: float | None,
    hosts: Sequence[str],
) -> GateVerdict:
    """Pass when no element was wrong and, given a threshold, the in-place busbw at
    ``gate_bytes`` is at least ``threshold_gbps``."""
    row = result.row(gate_bytes)
    wrong = sum(r.wrong for r in result.rows) + (result.out_of_bounds or 0)
    busbw = row.in_place.busbw_gbps if row else None
    reason = ""
    if wrong:
        bad = [size_label(r.size_bytes) for r in result.rows if r.wrong]
        reason = f"{wrong} wrong elements after the all-reduce (at {', '.join(bad) or 'bounds'})"
    elif threshold_gbps is not None and row is None:
        largest = max(r.size_bytes for r in result.rows)
        reason = (
            f"the sweep has no row at {size_label(gate_bytes)} (its largest is "
            f"{size_label(largest)}), so in-place busbw there is unknown: expected >= "
            f"{threshold_gbps:g} GB/s"
        )
    elif threshold_gbps is not None and busbw is not None and busbw < threshold_gbps:
        reason = (
            f"in-place busbw at {size_label(gate_bytes)}: expected >= {threshold_gbps:g} GB/s, "
            f"observed {busbw:g} GB/s"
        )
    return GateVerdict(
        hosts=tuple(hosts),
        gate_bytes=gate_bytes,
        threshold_gbps=threshold_gbps,
        busbw_gbps=busbw,
        wrong=wrong,
        passed=not reason,
        reason=reason,
    )


def size_label(size_bytes: int) -> str:
    """``8 GiB (8589934592 B)``, ``1 MiB (1048576 B)``, ``512 B``."""
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if size_bytes >= scale and size_bytes % scale == 0:
            return f"{size_bytes // scale} {unit} ({size_bytes} B)"
    return f"{size_bytes} B"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Sweep:
    """Message sizes and iterations, as all_reduce_perf's ``-b -e -n -w`` take them."""

    min_bytes: int
    max_bytes: int
    iters: int = 20
    warmup_iters: int = 5


def all_reduce_perf_argv(binary: str, sweep: Sweep, gpus: int) -> list[str]:
    """``all_reduce_perf -b MIN -e MAX -f 2 -g GPUS -n ITERS -w WARMUP``.

    The form of AMD's acceptance command (``./all_reduce_perf -b 8 -e 8G -f 2 -g 8``,
    system-acceptance-docs ``docs/common/rccl-benchmarking.md``); ``-g`` is the GPUs one
    process drives (all of a node's alone, 1 per rank under mpirun).
    """
    return [
        binary,
        "-b",
        str(sweep.min_bytes),
        "-e",
        str(sweep.max_bytes),
        "-f",
        "2",
        "-g",
        str(gpus),
        "-n",
        str(sweep.iters),
        "-w",
        str(sweep.warmup_iters),
    ]


def mpirun_argv(
    mpirun: str,
    hosts: Sequence[tuple[str, int]],
    env: Mapping[str, str],
    extra_args: Sequence[str],
    test: Sequence[str],
) -> list[str]:
    """``mpirun -np N -H a:SLOTS,b:SLOTS --allow-run-as-root [extra] -x K=V ... TEST``.

    The form of the recorded multi-node runs in ``fixtures/rccl-tests``: the AAC10 2-node
    MI300X run (``mpirun -np 16 -H gpu-53:8,gpu-56:8 --mca pml ucx -x NCCL_SOCKET_IFNAME=ens
    -x NCCL_IB_HCA=^mlx5_bond_0 ... all_reduce_perf -b 8 -e 16G -f 2 -g 1``) and the AAC14
    2-node MI355X run (``mpirun -H mi355-gpu-23:8,mi355-gpu-24:8 ... -g 1``): one rank per
    GPU (``hosts`` are ``(address, gpus)``, the test's ``-g`` is 1), the network
    environment exported to every rank with ``-x`` (so every rank gets the head's values).
    ``--allow-run-as-root``: the engine image runs as root, which OpenMPI refuses without it.
    """
    ranks = sum(slots for _, slots in hosts)
    argv = [mpirun, "-np", str(ranks), "-H", ",".join(f"{a}:{s}" for a, s in hosts)]
    argv += ["--allow-run-as-root", *extra_args]
    for name, value in sorted(env.items()):
        argv += ["-x", f"{name}={value}"]
    return [*argv, *test]


def process_env(
    node_env: Mapping[str, str], extra: Mapping[str, str], prefixes: tuple[str, ...]
) -> dict[str, str]:
    """The environment of one test process: the node's settings whose names start with
    ``prefixes`` (from the plan: ``NCCL_SOCKET_IFNAME``, ``NCCL_IB_HCA``, recipe tuning,
    or ``GLOO_SOCKET_IFNAME``) and the stack's ``fabric.extra_env``, which wins."""
    env = {k: v for k, v in node_env.items() if k.startswith(prefixes)}
    return dict(sorted({**env, **extra}.items()))


def in_image(
    argv: Sequence[str],
    image: str,
    container: str,
    env: Mapping[str, str],
    *,
    gpus: bool = True,
    mounts: Sequence[str] = (),
) -> str:
    """Shell text running ``argv`` in ``image``, with the engine's ROCm device access
    when ``gpus``.

    The flags are the docker runtime's (templates/runtime/docker.sh.j2): host network and
    IPC (RCCL's shared memory and the inter-node sockets), ``--cap-add=SYS_PTRACE``,
    ``--security-opt seccomp=unconfined`` and, for GPUs, ``--group-add=video``,
    ``--device /dev/kfd`` and ``--device /dev/dri``; ``--pull=never`` because the image is
    staged first, and ``--rm`` with a fixed ``--name`` so a leftover is removed by name.
    ``mounts`` are ``-v`` values (the gloo script's directory).
    """
    words = ["docker", "run", "--rm", "--name", container, "--pull=never"]
    words += ["--network=host", "--ipc=host"]
    if gpus:
        words.append("--group-add=video")
    words += ["--cap-add=SYS_PTRACE", "--security-opt", "seccomp=unconfined"]
    if gpus:
        words += ["--device", "/dev/kfd", "--device", "/dev/dri"]
    for mount in mounts:
        words += ["-v", mount]
    for name, value in sorted(env.items()):
        words += ["-e", f"{name}={value}"]
    words += ["--entrypoint", argv[0], image, *argv[1:]]
    return shlex.join(words)


def on_host(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Shell text running ``argv`` on the host itself with ``env`` (process runtime)."""
    assignments = [f"{k}={v}" for k, v in sorted(env.items())]
    return shlex.join(["env", *assignments, *argv]) if assignments else shlex.join(argv)


def gloo_argv(
    python: str,
    script: str,
    *,
    rank: int,
    world_size: int,
    head: str,
    port: int,
    sweep: Sweep,
    timeout_s: float,
) -> list[str]:
    """The command line of one rank of the gloo sweep (:mod:`amdfleet.remote.fabric_gloo`);
    rank 0 hosts the ``tcp://HEAD:PORT`` rendezvous."""
    return [
        python,
        script,
        "--rank",
        str(rank),
        "--world-size",
        str(world_size),
        "--init-method",
        f"tcp://{host_port(head, port)}",
        "--min-bytes",
        str(sweep.min_bytes),
        "--max-bytes",
        str(sweep.max_bytes),
        "--iters",
        str(sweep.iters),
        "--warmup-iters",
        str(sweep.warmup_iters),
        "--timeout-s",
        str(timeout_s),
    ]


def bounded(command: str, timeout_s: int, pid_path: str) -> str:
    """Run ``command`` under ``timeout`` (SIGTERM at ``timeout_s``, SIGKILL
    :data:`KILL_GRACE_S` later, so nothing outlives the provider's wait), recording the
    PID of ``timeout`` in ``pid_path`` so :func:`stop_command` can end the run early."""
    pid = shlex.quote(pid_path)
    return (
        f"echo $$ >{pid} && exec timeout -k {KILL_GRACE_S} {timeout_s} sh -c {shlex.quote(command)}"
    )


def stop_command(pid_path: str, container: str | None = None) -> str:
    """Stop a run :func:`bounded` started (SIGTERM to ``timeout``, which passes it on) and
    its container; succeeds when nothing runs any more."""
    pid = shlex.quote(pid_path)
    text = f'p=$(cat {pid} 2>/dev/null) && [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; '
    if container:
        text += f"docker rm -f {shlex.quote(container)} >/dev/null 2>&1; "
    return text + "true"


def cleanup_command(work_dir: str, container: str | None = None) -> str:
    """Remove what the check leaves on a host (its directory, a leftover container);
    idempotent."""
    text = f"rm -rf {shlex.quote(work_dir)}"
    if container:
        text = f"docker rm -f {shlex.quote(container)} >/dev/null 2>&1; {text}"
    return text
