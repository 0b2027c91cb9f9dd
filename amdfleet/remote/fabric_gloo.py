"""A gloo all-reduce sweep across hosts that prints what rccl-tests' all_reduce_perf prints.

This file is a standalone script: the FabricCheck provider uploads its text to every
node of a CPU stack and runs it there with the engine's own Python (which has torch),
one rank per node::

    python3 fabric_gloo.py --rank R --world-size N --init-method tcp://HEAD:PORT \\
        --min-bytes 1024 --max-bytes 67108864 --iters 20 --warmup-iters 5 --timeout-s 600

It imports nothing from amdfleet (the hosts do not have it) and torch only inside
:func:`main`, so its formatting functions are tested without torch.

Each rank joins ``torch.distributed.init_process_group("gloo", init_method=...)`` (set
``GLOO_SOCKET_IFNAME`` to the interface between the hosts), then follows nccl-tests'
``TimeTest`` (src/common.cu): warm-up at the largest then the smallest size, then for each
size of the doubling sweep an out-of-place and an in-place measurement, each the mean of
``iters`` timed all-reduces, averaged over the ranks, followed by one validated all-reduce
(``#wrong`` counts the elements that differ from the expected sum, summed over ranks).
``torch.distributed.all_reduce`` works in place only, so "out-of-place" here copies the
input into the output buffer and reduces that: its time includes one local copy.

Rank 0 prints the table in all_reduce_perf's layout, so one parser
(:func:`amdfleet.remote.fabric.parse_all_reduce_perf`) reads both tests:
``algbw = size / time`` and ``busbw = algbw * 2*(n-1)/n``, nccl-tests' definition for
AllReduce (nccl-tests doc/PERFORMANCE.md, "Bus bandwidth" -> "AllReduce"), in GB/s
(10^9 bytes/s); the last line is the mean busbw over every measurement, as
all_reduce_perf's "Avg bus bandwidth" is.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

ELEMENT_BYTES = 4  # float32


def busbw_factor(ranks: int) -> float:
    """nccl-tests' AllReduce bus-bandwidth factor, ``2*(n-1)/n``."""
    return 2 * (ranks - 1) / ranks


def sweep(min_bytes: int, max_bytes: int) -> list[int]:
    """The sizes ``all_reduce_perf -b min -e max -f 2`` measures."""
    sizes = []
    size = min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= 2
    return sizes


def format_time(seconds: float) -> str:
    """A time in microseconds as nccl-tests prints it (fewer decimals as it grows)."""
    usec = seconds * 1e6
    if usec >= 10000.0:
        return f"{usec:7.0f}"
    if usec >= 100.0:
        return f"{usec:7.1f}"
    return f"{usec:7.2f}"


def format_row(size: int, measured: Sequence[tuple[float, int]], ranks: int) -> str:
    """One table row: ``size count type redop root`` then ``time algbw busbw #wrong`` for
    the out-of-place and the in-place measurement (seconds, wrong elements)."""
    line = f"{size:12d}  {size // ELEMENT_BYTES:12d}  {'float':>8}  {'sum':>6}  {-1:6d}"
    for seconds, wrong in measured:
        algbw = size / seconds / 1e9
        busbw = algbw * busbw_factor(ranks)
        line += f"  {format_time(seconds)}  {algbw:6.2f}  {busbw:6.2f}  {wrong:5d}"
    return line


def header(args: argparse.Namespace, ranks: Sequence[tuple[str, int]], version: str) -> list[str]:
    """The lines all_reduce_perf prints before its rows, for this run."""
    lines = [
        f"# nThread 1 nGpus 1 minBytes {args.min_bytes} maxBytes {args.max_bytes} step: "
        f"2(factor) warmup iters: {args.warmup_iters} iters: {args.iters} agg iters: 1 "
        "validation: 1 graph: 0",
        "#",
        f"fabric-gloo: torch.distributed {version} gloo all-reduce sweep "
        "(busbw = algbw * 2*(n-1)/n, as nccl-tests defines it)",
        "# Using devices",
    ]
    for rank, (host, pid) in enumerate(ranks):
        lines.append(f"#  Rank {rank:2d} Group  0 Pid {pid:6d} on {host:>10} device  0 [cpu] gloo")
    lines += [
        "#",
        "#" + " " * 62 + "out-of-place" + " " * 23 + "in-place",
        "#       size         count      type   redop    root     time   algbw   busbw #wrong"
        "     time   algbw   busbw #wrong",
        "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)"
        "            (us)  (GB/s)  (GB/s)",
    ]
    return lines


def footer(busbws: Sequence[float], wrong: int) -> list[str]:
    """The closing lines: out-of-bounds count and the mean bus bandwidth."""
    average = sum(busbws) / len(busbws) if busbws else 0.0
    return [
        f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}",
        f"# Avg bus bandwidth    : {average:g}",
        "#",
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line the provider builds (:func:`amdfleet.remote.fabric.gloo_command`)."""
    parser = argparse.ArgumentParser(description="gloo all-reduce sweep across hosts")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init-method", required=True, help="tcp://HEAD:PORT")
    parser.add_argument("--min-bytes", type=int, required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup-iters", type=int, default=5)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run this rank's part of the sweep; rank 0 prints the table. Exit 0 on success."""
    args = parse_args(argv)
    import torch  # type: ignore[import-not-found,unused-ignore]
    import torch.distributed as dist  # type: ignore[import-not-found,unused-ignore]

    torch.set_num_threads(1)  # the local copy must not compete with gloo for the cores
    dist.init_process_group(
        "gloo",
        init_method=args.init_method,
        rank=args.rank,
        world_size=args.world_size,
        timeout=timedelta(seconds=args.timeout_s),
    )
    try:
        return _run(args, torch, dist)
    finally:
        dist.destroy_process_group()


def _run(args: argparse.Namespace, torch: Any, dist: Any) -> int:
    ranks = args.world_size
    who: list[Any] = [None] * ranks
    dist.all_gather_object(who, (socket.gethostname(), os.getpid()))
    lead = args.rank == 0
    if lead:
        _emit(header(args, who, torch.__version__))
    sizes = sweep(args.min_bytes, args.max_bytes)
    for size in (sizes[-1], sizes[0]):  # nccl-tests warms up at the largest, then smallest
        buffer = torch.zeros(size // ELEMENT_BYTES, dtype=torch.float32)
        for _ in range(args.warmup_iters):
            dist.all_reduce(buffer)
    busbws: list[float] = []
    wrong_total = 0
    for size in sizes:
        measured = [_measure(args, torch, dist, size, in_place) for in_place in (False, True)]
        wrong_total += sum(wrong for _, wrong in measured)
        busbws += [size / seconds / 1e9 * busbw_factor(ranks) for seconds, _ in measured]
        if lead:
            _emit([format_row(size, measured, ranks)])
    if lead:
        _emit(footer(busbws, wrong_total))
    return 0


def _measure(
    args: argparse.Namespace, torch: Any, dist: Any, size: int, in_place: bool
) -> tuple[float, int]:
    """(mean seconds per all-reduce averaged over ranks, wrong elements over ranks)."""
    count = size // ELEMENT_BYTES
    send = torch.zeros(count, dtype=torch.float32)
    recv = send if in_place else torch.zeros(count, dtype=torch.float32)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(args.iters):
        if not in_place:
            recv.copy_(send)
        dist.all_reduce(recv)
    elapsed = torch.tensor([(time.perf_counter() - started) / args.iters], dtype=torch.float64)
    dist.all_reduce(elapsed)
    send.fill_(float(args.rank + 1))
    if not in_place:
        recv.copy_(send)
    dist.all_reduce(recv)
    expected = float(args.world_size * (args.world_size + 1) // 2)
    wrong = torch.tensor([int((recv != expected).sum().item())], dtype=torch.int64)
    dist.all_reduce(wrong)
    return float(elapsed.item()) / args.world_size, int(wrong.item())


def _emit(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
