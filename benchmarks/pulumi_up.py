"""Wall time of ``pulumi up`` with the real CLI on real SSH hosts: one host vs four.

What it measures, per stack size N (default 1 and 4), over several repetitions:

- ``preview`` of a new stack;
- the first ``up`` (every resource created), with each resource's create time taken
  from the engine's JSON event stream as it arrives (stamped here, to the millisecond);
- a no-op ``up`` right after it;
- ``destroy``.

Each N is one stack of N nodes (``topology.nodes: N``, ``parallelism.pp: N``): a Fleet of
N SshHosts, N ModelWeights and N EngineServices in one ``pulumi up``, which is what
"provisioning N hosts" is in amdfleet (N one-node stacks would be N CLI runs, timing the
CLI's start-up rather than the program's parallelism). Rank 0 is the head, the others
are headless workers, as the planner renders a multi-node vLLM.

Real: the Pulumi CLI (``scripts/install-pulumi``), ``__main__.py``, the dynamic-provider
host, every provider, SSH hosts in network namespaces (tests/support/hostlab.py), the
rendered launch scripts. Stand-ins: the engine is ``tests/support/fake_engine.py`` (a
real HTTP server on the head, ready at once; workers only stay up), the weights are a
``local_path`` holding a config.json (no download), verification is disabled. So the
numbers are amdfleet's and Pulumi's own overhead, not a model's load time.

The goal (issue: "hosts are provisioned in parallel") is a first ``up`` of 4 hosts in at
most 1.3x the time of 1 host. Repetitions alternate the order of the sizes, and the
1-minute load average is recorded before every timed command (other work on the
machine shows up there). Needs root (network namespaces) and the Pulumi CLI on PATH or
under ``.amdfleet/pulumi/``.

    .venv/bin/python benchmarks/pulumi_up.py --repeat 5
    .venv/bin/python benchmarks/pulumi_up.py --hosts 1 --hosts 4 --hosts 8 --repeat 3

writes ``benchmarks/results/<date>-pulumi-up.md`` (``--out`` to choose) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.hostlab import HostLab  # noqa: E402
from tests.support.pulumi_cli import PulumiWorkspace  # noqa: E402

FAKE_ENGINE = REPO / "tests" / "support" / "fake_engine.py"
GOAL = 1.3
PORT = 18095
API_KEY = "bench-key-41d7c0e9"
OPS = ("preview", "up", "noop_up", "destroy")
ARCH = {
    "params_b": 0.01,
    "layers": 8,
    "hidden": 128,
    "intermediate": 256,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 32,
    "vocab": 4096,
    "max_context": 4096,
}


@dataclass
class Timed:
    """One timed pulumi command: wall seconds, the load average before it, and for an
    ``up`` each resource's (start, end) seconds after the command started."""

    seconds: float
    load: float
    resources: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Sample:
    """The four commands of one repetition for one stack size."""

    hosts: int
    repetition: int
    timed: dict[str, Timed] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _put_pulumi_on_path()
    sizes = sorted(set(args.hosts))
    args.started = _run_text(["date"])
    args.commit = _git("rev-parse", "--short", "HEAD")
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-pulumi-") as tmp, _lab(max(sizes)) as lab:
        workspace = PulumiWorkspace(Path(tmp))
        if args.provider_threads:
            workspace.env["AMDFLEET_PROVIDER_THREADS"] = str(args.provider_threads)
        for repetition in range(-args.warmup, args.repeat):
            order = sizes if repetition % 2 == 0 else list(reversed(sizes))
            for hosts in order:
                sample = _measure(workspace, lab, hosts, repetition)
                _progress(sample)
                if repetition >= 0:
                    samples.append(sample)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    report = _report(samples, sizes, args)
    out = args.out or REPO / "benchmarks" / "results" / f"{date.today().isoformat()}-pulumi-up.md"
    out.write_text(report)
    print(report)
    print(f"written to {out}", file=sys.stderr)
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, action="append", help="stack sizes (1 and 4)")
    parser.add_argument("--repeat", type=int, default=5, help="measured repetitions (5)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded repetitions (1)")
    parser.add_argument("--out", type=Path, help="results file (benchmarks/results/...)")
    parser.add_argument("--json", type=Path, help="also write every sample here (raw)")
    parser.add_argument(
        "--provider-threads",
        type=int,
        help="run amdfleet's dynamic-provider host with this many gRPC worker threads "
        "(AMDFLEET_PROVIDER_THREADS; default 64; 4 is what the SDK's own host has)",
    )
    args = parser.parse_args(argv)
    args.hosts = args.hosts or [1, 4]
    if min(args.hosts) < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--hosts must be >= 1, --repeat >= 1 and --warmup >= 0")
    return args


def _put_pulumi_on_path() -> None:
    if shutil.which("pulumi"):
        return
    for bin_dir in sorted((REPO / ".amdfleet" / "pulumi").glob("*/bin"), reverse=True):
        if (bin_dir / "pulumi").exists():
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
            return
    sys.exit("no pulumi on PATH or under .amdfleet/pulumi: run scripts/install-pulumi")


@contextmanager
def _lab(count: int) -> Iterator[HostLab]:
    """``count`` SSH hosts, each with the stand-in engine and a local checkpoint."""
    lab = HostLab.start(count)
    try:
        if not lab.netns:
            sys.exit("needs netns mode (root, ip netns): hosts must be separate machines")
        for host in lab:
            fake = host.path("/opt/fake")
            fake.mkdir(parents=True)
            shutil.copy(FAKE_ENGINE, fake / "fake_engine.py")
            wrapper = fake / "vllm"
            wrapper.write_text('#!/bin/sh\nexec /usr/bin/python3 /opt/fake/fake_engine.py "$@"\n')
            wrapper.chmod(0o755)
            model = host.path("/opt/models/tiny")
            model.mkdir(parents=True)
            (model / "config.json").write_text('{"model_type": "llama"}')
        yield lab
    finally:
        lab.close()


def _measure(workspace: PulumiWorkspace, lab: HostLab, hosts: int, repetition: int) -> Sample:
    stack = f"bench-{hosts}h-{repetition + 100}"
    workspace.init_stack(stack, _config(lab, hosts), {"apiKey": API_KEY})
    sample = Sample(hosts, repetition)
    try:
        sample.timed["preview"] = _timed(workspace, ["preview", "--stack", stack])
        sample.timed["up"] = _timed(workspace, ["up", "--yes", "--json", "--stack", stack])
        sample.timed["noop_up"] = _timed(workspace, ["up", "--yes", "--json", "--stack", stack])
        sample.timed["destroy"] = _timed(workspace, ["destroy", "--yes", "--stack", stack])
    except BaseException:
        workspace.run(["destroy", "--yes", "--stack", stack], check=False)
        raise
    finally:
        workspace.run(["stack", "rm", "--yes", "--force", stack], check=False)
    return sample


def _config(lab: HostLab, hosts: int) -> dict[str, Any]:
    fleet = [
        {k: v for k, v in lab.host_props(i).items() if k != "connection"} for i in range(hosts)
    ]
    return {
        "amdfleet:fleet": {"hosts": fleet},
        "amdfleet:topology": {"accelerator": "cpu", "nodes": hosts, "gpus_per_node": 1},
        "amdfleet:model": {
            "id": "bench-tiny",
            "checkpoint": "/opt/models/tiny",
            "served_name": "bench-tiny",
            "architecture": ARCH,
        },
        "amdfleet:engine": {
            "name": "vllm",
            "runtime": "process",
            "executable": "/opt/fake/vllm",
            "startup_timeout_s": 60,
        },
        "amdfleet:parallelism": {"tp": 1, "pp": hosts},
        "amdfleet:serving": {"host": lab[0].address, "port": PORT, "max_model_len": 2048},
        "amdfleet:weights": {"local_path": "/opt/models/tiny"},
        "amdfleet:verification": {"enabled": False},
    }


def _timed(workspace: PulumiWorkspace, args: list[str]) -> Timed:
    """Run ``pulumi ARGS`` and stamp each line of its output as it arrives."""
    load = _loadavg()
    argv = [workspace.pulumi, *args, "--non-interactive"]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=workspace.root,
        env=workspace.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    stamped = [(time.monotonic() - start, line) for line in proc.stdout]
    stderr = proc.stderr.read() if proc.stderr else ""
    code = proc.wait()
    seconds = time.monotonic() - start
    if code != 0:
        tail = "".join(line for _, line in stamped[-30:])
        raise RuntimeError(f"`pulumi {shlex.join(args)}` exited with {code}:\n{tail}{stderr}")
    return Timed(seconds, load, _resource_times(stamped))


def _resource_times(stamped: list[tuple[float, str]]) -> dict[str, tuple[float, float]]:
    """Resource name -> (seconds at its step's start, at its outputs) for created ones."""
    started: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for at, line in stamped:
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        for kind in ("resourcePreEvent", "resOutputsEvent"):
            meta = (event.get(kind) or {}).get("metadata")
            if not meta or meta.get("op") != "create":
                continue
            name = meta["urn"].rsplit("::", 1)[-1]
            if kind == "resourcePreEvent":
                started[name] = at
            elif name in started:
                spans[name] = (started[name], at)
    return spans


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _progress(sample: Sample) -> None:
    timed = sample.timed.items()
    parts = ", ".join(f"{op} {t.seconds:.2f} s (load {t.load:.2f})" for op, t in timed)
    label = "warm-up" if sample.repetition < 0 else f"rep {sample.repetition + 1}"
    print(f"[{label}] {sample.hosts} host(s): {parts}", file=sys.stderr, flush=True)


# -- report -------------------------------------------------------------------------------


def _report(samples: list[Sample], sizes: list[int], args: argparse.Namespace) -> str:
    counts = ", ".join(str(n) for n in sizes)
    lines = [f"# `pulumi up` with {counts} hosts ({date.today().isoformat()})", ""]
    lines += _machine(args)
    lines += ["", "## Wall time (seconds)", ""]
    lines += [
        "| hosts | command | median | min | max | spread (max-min) | runs | load avg (1 min) "
        "before each run |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for hosts in sizes:
        for op in OPS:
            values = [s.timed[op] for s in samples if s.hosts == hosts]
            secs = [t.seconds for t in values]
            loads = " ".join(f"{t.load:.2f}" for t in values)
            lines.append(
                f"| {hosts} | {op.replace('_', '-')} | {statistics.median(secs):.2f} | "
                f"{min(secs):.2f} | {max(secs):.2f} | {max(secs) - min(secs):.2f} | "
                f"{len(secs)} | {loads} |"
            )
    lines += ["", *_goal(samples, sizes), "", *_phases(samples, sizes)]
    return "\n".join(lines) + "\n"


def _machine(args: argparse.Namespace) -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.lower().startswith("model name")
        ),
        "unknown",
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    pulumi = subprocess.run(
        ["pulumi", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    commit = _git("rev-parse", "--short", "HEAD")
    if commit != args.commit:  # other work was committed while this ran
        commit = f"{args.commit} at the start, {commit} at the end"
    dirty = [line.split()[-1] for line in _git("status", "--porcelain", "-uno").splitlines()]
    command = shlex.join([".venv/bin/python", "benchmarks/pulumi_up.py", *sys.argv[1:]])
    return [
        f"- date: {args.started} (`date` at the start)",
        f"- machine: {cpu}, {os.cpu_count()} cores, {mem_kib / 1024 / 1024:.1f} GiB RAM "
        "(/proc/cpuinfo, /proc/meminfo)",
        f"- Pulumi CLI {pulumi}; `pulumi up` parallelism: default (4 x GOMAXPROCS = "
        f"{4 * (os.cpu_count() or 1)}); dynamic-provider host: "
        + (
            f"amdfleet's (plugins/pulumi-python), **{args.provider_threads} gRPC worker threads**"
            if args.provider_threads
            else "amdfleet's (plugins/pulumi-python), 64 gRPC worker threads"
        ),
        f"- amdfleet commit {commit}"
        + (f" (uncommitted changes in: {', '.join(dirty)})" if dirty else ""),
        f"- command: `{command}` ({args.repeat} measured repetitions after {args.warmup} "
        "warm-up, sizes alternating in order)",
        "- engine: the stand-in (tests/support/fake_engine.py), weights a local_path, "
        "verification disabled; hosts: SSH servers in network namespaces on this machine",
    ]


def _goal(samples: list[Sample], sizes: list[int]) -> list[str]:
    lines = ["## Goal: first `up` of N hosts <= 1.3 x that of 1 host", ""]
    if 1 not in sizes:
        return [*lines, "- not measured: no 1-host runs (add `--hosts 1`)"]
    one = statistics.median(s.timed["up"].seconds for s in samples if s.hosts == 1)
    one_span = statistics.median(_span(s) for s in samples if s.hosts == 1)
    for hosts in sizes:
        if hosts == 1:
            continue
        many = statistics.median(s.timed["up"].seconds for s in samples if s.hosts == hosts)
        span = statistics.median(_span(s) for s in samples if s.hosts == hosts)
        verdict = "met" if many <= GOAL * one else "missed"
        lines.append(
            f"- {hosts} hosts: {many:.2f} s / {one:.2f} s = **{many / one:.2f}x** ({verdict}); "
            f"provisioning span {span:.2f} s / {one_span:.2f} s = {span / one_span:.2f}x"
        )
    lines += [
        "",
        "The provisioning span runs from the first SshHost's create to the last node "
        "resource's end: the wall time without the CLI's start-up, the implicit preview "
        "and the program's start, which are the same for every N.",
    ]
    return lines


def _span(sample: Sample) -> float:
    """Seconds from the first SshHost's create to the end of the last node resource."""
    spans = [v for k, v in sample.timed["up"].resources.items() if "-host" in k]
    firsts = [v[0] for k, v in sample.timed["up"].resources.items() if k.startswith("fleet-")]
    return max(end for _, end in spans) - min(firsts)


def _phases(samples: list[Sample], sizes: list[int]) -> list[str]:
    """Median create time of each resource kind, and when it started, in the first up."""
    lines = [
        "## Where the first `up` spends its time (medians, seconds after the command started)",
        "",
        "| hosts | resource | starts | ends | create takes |",
        "|---:|---|---:|---:|---:|",
    ]
    for hosts in sizes:
        spans: dict[str, list[tuple[float, float]]] = {}
        for sample in samples:
            if sample.hosts != hosts:
                continue
            for name, span in sample.timed["up"].resources.items():
                spans.setdefault(_kind(name), []).append(span)
        for kind in sorted(spans, key=lambda k: statistics.median(s[0] for s in spans[k])):
            starts = statistics.median(s[0] for s in spans[kind])
            ends = statistics.median(s[1] for s in spans[kind])
            takes = statistics.median(s[1] - s[0] for s in spans[kind])
            lines.append(f"| {hosts} | {kind} | {starts:.2f} | {ends:.2f} | {takes:.2f} |")
    return lines


def _kind(name: str) -> str:
    """``deployment-engine-host3`` -> ``deployment-engine-host1.. (workers)``, the stack
    resource -> ``(stack)``: one row per kind of resource."""
    if name.startswith("amdfleet-"):
        return "(stack: the program's run)"
    for prefix in ("fleet-host", "deployment-weights-host", "deployment-engine-host"):
        if name.startswith(prefix):
            rank = name.removeprefix(prefix)
            if prefix == "deployment-engine-host":
                return f"{prefix}0 (head)" if rank == "0" else f"{prefix}1.. (workers)"
            return f"{prefix}* (each)"
    return name


def _git(*args: str) -> str:
    return _run_text(["git", "-C", str(REPO), *args])


def _run_text(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
