"""Wall time of ``amdfleet plan <stack>`` from a fresh interpreter, and what it imports.

What it measures, per source tree (this checkout, and with ``--compare REV`` the same
command on a git revision exported to a temporary directory):

- wall time of ``amdfleet plan STACK`` run as a subprocess (a new interpreter each
  time, output discarded), median / min / max over ``--repeat`` runs after
  ``--warmup`` unrecorded ones; trees alternate run by run, so load on the machine
  hits both alike;
- the child's CPU time (user + sys), which other work on the machine inflates far less
  than wall time;
- the same for ``python -c pass`` (the floor: interpreter and site start-up);
- which heavy libraries the command imports (``sys.modules`` after the command), with
  each one's cumulative import time from ``python -X importtime``.

The goal (issue 8) is ``amdfleet plan`` under 0.5 s on the 2-core machines.

    .venv/bin/python benchmarks/cli_startup.py --repeat 21 --compare 9e7b527

writes ``benchmarks/results/<date>-cli-startup.md`` (``--out`` to choose) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = (
    "pulumi",
    "grpc",
    "matplotlib",
    "numpy",
    "tokenizers",
    "huggingface_hub",
    "httpx",
    "paramiko",
    "jinja2",
    "pydantic",
    "yaml",
)

# Runs the CLI from the tree given as argv[1] (older trees have no `python -m
# amdfleet.cli`); with argv[2] set, writes the loaded modules there afterwards.
_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from amdfleet.cli import main
try:
    main(sys.argv[3:], prog_name="amdfleet")
except SystemExit as e:
    if e.code not in (0, None):
        raise
if sys.argv[2]:
    with open(sys.argv[2], "w") as f:
        json.dump(sorted(sys.modules), f)
"""


@dataclass
class Tree:
    """A source tree to measure and what was measured on it."""

    label: str
    path: Path
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    heavy: dict[str, float] = field(default_factory=dict)  # module -> cumulative import ms


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    started = _run_text(["date"])
    loads = [_loadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        trees = [Tree(f"this checkout ({_commit_label()})", REPO)]
        if args.compare:
            old = Path(tmp) / "compare"
            _export(args.compare, old)
            label = f"{args.compare} ({_git('rev-parse', '--short', args.compare)})"
            trees.insert(0, Tree(label, old))
        floor = Tree("`python -c pass` (floor)", REPO)
        for i in range(-args.warmup, args.repeat):
            for tree in trees if i % 2 == 0 else reversed(trees):
                run = [sys.executable, "-c", _RUNNER, str(tree.path), "", *args.command]
                _record(tree, _timed(run), i >= 0)
            _record(floor, _timed([sys.executable, "-c", "pass"]), i >= 0)
        loads.append(_loadavg())
        for tree in trees:
            tree.heavy = _heavy_imports(tree.path, args.command, Path(tmp) / "modules.json")
    report = _report(trees, floor, args, started, loads)
    out = args.out or REPO / "benchmarks" / "results" / f"{date.today().isoformat()}-cli-startup.md"
    out.write_text(report)
    print(report)
    print(f"written to {out}", file=sys.stderr)
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="mi355x-llama70b", help="stack to plan")
    parser.add_argument("--repeat", type=int, default=21, help="measured runs per tree (21)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded runs per tree (2)")
    parser.add_argument("--compare", metavar="REV", help="also measure this git revision")
    parser.add_argument("--out", type=Path, help="results file (benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    args.command = ["plan", args.stack]
    return args


def _export(rev: str, into: Path) -> None:
    # `git archive` rather than `git worktree add`: leaves the repository's metadata alone.
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True
    ).stdout
    into.mkdir()
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _timed(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, check=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _record(tree: Tree, measured: tuple[float, float], keep: bool) -> None:
    if keep:
        tree.seconds.append(measured[0])
        tree.cpu.append(measured[1])


def _heavy_imports(tree: Path, command: list[str], record: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _RUNNER, str(tree), str(record), *command],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = {m.partition(".")[0] for m in json.loads(record.read_text())}
    cumulative: dict[str, float] = {}
    for line in result.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in HEAVY and parts[1].isdigit():
            cumulative[parts[2]] = int(parts[1]) / 1000
    return {name: cumulative.get(name, 0.0) for name in HEAVY if name in loaded}


def _report(
    trees: list[Tree],
    floor: Tree,
    args: argparse.Namespace,
    started: str,
    loads: list[float],
) -> str:
    command = shlex.join([".venv/bin/python", "benchmarks/cli_startup.py", *sys.argv[1:]])
    lines = [
        f"# `amdfleet plan` start-up ({date.today().isoformat()})",
        "",
        f"- date: {started} (`date` at the start)",
        f"- machine: {_cpu_model()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}",
        f"- load average (1 min): {loads[0]:.2f} at the start, {loads[1]:.2f} at the end",
        f"- command: `{command}` ({args.repeat} measured runs per tree after {args.warmup} "
        "warm-up, trees alternating)",
        f"- measured: `amdfleet {shlex.join(args.command)}` in a fresh interpreter "
        "(subprocess, stdout discarded), wall time",
        "",
        "## Wall time and CPU time (seconds)",
        "",
        "| tree | wall median | wall min | wall max | CPU (user+sys) median | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tree in [*trees, floor]:
        secs = tree.seconds
        lines.append(
            f"| {tree.label} | {statistics.median(secs):.3f} | {min(secs):.3f} "
            f"| {max(secs):.3f} | {statistics.median(tree.cpu):.3f} | {len(secs)} |"
        )
    lines += [
        "",
        "## Heavy libraries imported (cumulative import time, ms, from `-X importtime`)",
        "",
        "| tree | " + " | ".join(HEAVY) + " |",
        "|---|" + "---:|" * len(HEAVY),
    ]
    for tree in trees:
        cells = [f"{tree.heavy[n]:.0f}" if n in tree.heavy else "-" for n in HEAVY]
        lines.append(f"| {tree.label} | " + " | ".join(cells) + " |")
    lines += ["", "`-` = not imported."]
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.lower().startswith("model name")
        ),
        "unknown",
    )


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _commit_label() -> str:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "-uno")
    return f"{commit}, uncommitted changes" if dirty else commit


def _git(*args: str) -> str:
    return _run_text(["git", "-C", str(REPO), *args])


def _run_text(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
