"""FabricCheck: a collective-bandwidth test across the nodes before the engine starts.

GPU fleets run rccl-tests' ``all_reduce_perf`` in the engine image (on the head: alone
on one node, under ``mpirun`` across several); CPU stacks run the gloo all-reduce sweep
(:mod:`amdfleet.remote.fabric_gloo`) on every node at once, with the engine's Python.
Either way the reporting process prints all_reduce_perf's table, which
:func:`~amdfleet.remote.fabric.parse_all_reduce_perf` reads and
:func:`~amdfleet.remote.fabric.evaluate_gate` judges: the in-place bus bandwidth at the
gate size against ``fabric.min_busbw_gbps``.

``create`` (and ``update``) runs the test: every run starts at once over SSH, each bounded
by the check's timeout; when one fails the others are stopped, and the error names the
host, the command and the last lines of its output (the failure lines, for a test that
reported one). A run that passes leaves ``result`` (kind, rows, busbw at the gate size,
threshold, passed); a gate miss raises FabricCheckFailed naming the nodes, the expected and
the observed busbw. Nothing stays on the hosts: each run removes its directory (the gloo
script) and container when done. ``read`` returns the recorded result (re-running a
bandwidth test on refresh would disturb a serving engine); ``delete`` removes anything a
run interrupted mid-way may have left.

Progress (:mod:`amdfleet.providers.progress`): the status shows the runs starting and then
each row as the reporting process prints it; a passed check leaves a note with the busbw.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field

from amdfleet.errors import RemoteCommandError, RemoteError
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote import fabric
from amdfleet.remote.transport.connection import CommandResult
from amdfleet.remote.transport.fanout import fan_out
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget

INPUTS = (
    "kind",
    "runs",
    "script",
    "work_dir",
    "container",
    "gate_bytes",
    "min_busbw_gbps",
    "timeout_s",
)
SCRIPT_NAME = "fabric_gloo.py"
PID_NAME = "run.pid"
_CALL_TIMEOUT = 60.0
# The remote `timeout` ends a run at timeout_s (+ KILL_GRACE_S); the SSH call waits a
# little longer so the run's own exit, with its output, is what reports a timeout.
_WAIT_MARGIN_S = 30.0
_STOP_EVERY_S = 2.0


class FabricRun(BaseModel):
    """One process of the check: a command on one host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: HostTarget = Field(description="Where it runs.")
    command: str = Field(description="Shell text of the test process (run bounded).")
    reports: bool = Field(description="Its output holds the all_reduce_perf table (rank 0).")


class FabricCheckProps(ProviderProps):
    """FabricCheck's properties: the runs, the gate (inputs) and the result (output)."""

    kind: Literal["rccl", "gloo"] = Field(description="rccl-tests or the gloo sweep.")
    runs: tuple[FabricRun, ...] = Field(min_length=1, description="Every process of the test.")
    script: str | None = Field(
        None, description="The gloo sweep's source, uploaded into work_dir on every host."
    )
    work_dir: str = Field(description="Directory on each host for the script and pid file.")
    container: str | None = Field(None, description="The test's container (docker runtime).")
    gate_bytes: int = Field(gt=0, description="Message size whose in-place busbw is gated.")
    min_busbw_gbps: float | None = Field(
        None, description="Minimum in-place busbw at gate_bytes, GB/s; None gates nothing."
    )
    timeout_s: int = Field(gt=0, description="Deadline of every run, seconds.")
    result: dict[str, Any] | None = Field(None, description="Output: the recorded result.")

    @property
    def hosts(self) -> tuple[str, ...]:
        """The names of the hosts the runs use, in order, each once."""
        return tuple(dict.fromkeys(run.host.name for run in self.runs))


class FabricCheckProvider(ResourceProvider):
    """Runs the fabric check. Stateless; leaves nothing on the hosts."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Run the test on every host at once and gate it.

        Raises RemoteCommandError (host, command, exit code, the failure lines or the last
        lines of output) when a run fails or times out, FabricCheckFailed when the busbw
        at the gate size is below the threshold or elements came back wrong, RemoteError
        when a host cannot be reached. Leaves nothing behind either way.
        """
        p = FabricCheckProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            result = _check(p, progress)
        return CreateResult(id_=f"fabric:{'+'.join(p.hosts)}", outs=p.to_outputs(result=result))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """The recorded result: the test is not re-run on refresh (it would load the links
        a serving engine uses)."""
        p = FabricCheckProps.from_inputs(props)
        return ReadResult(id_=id_, outs=p.to_outputs())

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Any changed input (the runs, the script, the gate) re-runs the check in place.
        Compares raw values (``news`` may hold unknowns)."""
        changes = changed_keys(olds, news, INPUTS)
        return DiffResult(changes=bool(changes), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Run the check again with the new inputs; raises as ``create`` does."""
        p = FabricCheckProps.from_inputs(news)
        with ResourceProgress.for_resource(news) as progress:
            return UpdateResult(outs=p.to_outputs(result=_check(p, progress)))

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Stop any run still going and remove the check's directory and container on
        every host. Idempotent; raises RemoteError when a host cannot be reached."""
        p = FabricCheckProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            progress.step(f"removing {p.work_dir} on {', '.join(p.hosts)}")
            for target in _targets(p):
                with open_host(target) as conn:
                    conn.run(_stop(p), timeout=_CALL_TIMEOUT)
                    conn.run(fabric.cleanup_command(p.work_dir, p.container), timeout=_CALL_TIMEOUT)


class FabricCheck(
    AmdFleetResource, name="FabricCheck", provider=FabricCheckProvider, props=FabricCheckProps
):
    """The fabric check; outputs ``result`` (kind, rows, busbw at the gate size, passed,
    threshold)."""

    result: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        props: FabricCheckProps | pulumi.Output[FabricCheckProps],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``props`` may be an Output: the runs built once the cluster check has derived
        each node's interface and the image's digest reference is known."""
        inputs = FabricCheckProps.inputs_of(props)
        super().__init__(name, inputs, opts)


def _check(p: FabricCheckProps, progress: ResourceProgress) -> dict[str, Any]:
    """Run, parse, gate; the result output, or an error."""
    progress.step(f"running the {p.kind} all-reduce sweep on {', '.join(p.hosts)}")
    outputs = _run_all(p, progress)
    report = next(run for run in p.runs if run.reports)
    parsed = _parse(report, outputs[report.host.name])
    verdict = fabric.evaluate_gate(parsed, p.gate_bytes, p.min_busbw_gbps, p.hosts)
    if not verdict.passed:
        raise fabric.FabricCheckFailed([verdict])
    progress.note(_summary(p, verdict))
    return {
        "kind": p.kind,
        "hosts": list(p.hosts),
        "gate_bytes": p.gate_bytes,
        "threshold_gbps": p.min_busbw_gbps,
        "busbw_gbps": verdict.busbw_gbps,
        "avg_busbw_gbps": parsed.avg_busbw_gbps,
        "rank_hosts": list(parsed.rank_hosts),
        "passed": verdict.passed,
        "rows": [row.to_dict() for row in parsed.rows],
    }


def _run_all(p: FabricCheckProps, progress: ResourceProgress) -> dict[str, CommandResult]:
    """Every run at once. Once one fails, the others are stopped (again every
    :data:`_STOP_EVERY_S` while they still run: a stop can reach a host before its run has
    started), and the first failure is raised."""
    outcome = fan_out(
        {
            i: functools.partial(_run_one, p, run, _lines_to(progress, run))
            for i, run in enumerate(p.runs)
        },
        on_failure=lambda pending: _stop_runs(p, [p.runs[i] for i in pending]),
        every_s=_STOP_EVERY_S,
    )
    outcome.raise_first()
    return {p.runs[i].host.name: result for i, result in outcome.results.items()}


def _run_one(
    p: FabricCheckProps, run: FabricRun, on_output: Callable[[str], None] | None
) -> CommandResult:
    """Upload the script, run the command bounded, clean up; raises RemoteCommandError
    when it exits non-zero or times out."""
    pid_path = f"{p.work_dir}/{PID_NAME}"
    with open_host(run.host) as conn:
        conn.run(f"mkdir -p {shlex.quote(p.work_dir)}", timeout=_CALL_TIMEOUT)
        try:
            if p.script is not None:
                conn.put(f"{p.work_dir}/{SCRIPT_NAME}", p.script.encode(), mode=0o644)
            command = fabric.bounded(run.command, p.timeout_s, pid_path)
            result = conn.run(
                command,
                timeout=p.timeout_s + fabric.KILL_GRACE_S + _WAIT_MARGIN_S,
                check=False,
                on_output=on_output,
            )
        finally:
            conn.run(fabric.cleanup_command(p.work_dir, p.container), timeout=_CALL_TIMEOUT)
    if not result.ok:
        raise _run_error(p, run, result)
    return result


def _run_error(p: FabricCheckProps, run: FabricRun, result: CommandResult) -> RemoteCommandError:
    """The error for a run that exited non-zero: the test's failure lines when it printed
    some (rccl-tests' ``Test NCCL failure ...``), else the last lines of its output."""
    tail = result.tail()
    try:
        fabric.parse_all_reduce_perf(result.output)
    except fabric.AllReducePerfError as e:
        tail = "\n".join(e.lines) or tail
    timed_out = result.exit_code == 124
    hint = (
        f"the test ran past fabric.timeout_s ({p.timeout_s} s): raise it, or check that every "
        "node reaches the head (fabric.port, the hosts' network_interface)"
        if timed_out
        else "fix the cause above; `pulumi up` runs the check again"
    )
    return RemoteCommandError(run.host.name, run.command, result.exit_code, tail, hint)


def _stop_runs(p: FabricCheckProps, runs: Sequence[FabricRun]) -> None:
    """Stop ``runs`` (a rank waits for a failed peer until the timeout otherwise). Best
    effort: a bounded run ends by itself at the latest at its timeout."""
    for run in runs:
        try:
            with open_host(run.host) as conn:
                conn.run(_stop(p), timeout=_CALL_TIMEOUT, check=False)
        except RemoteError:
            continue


def _parse(run: FabricRun, result: CommandResult) -> fabric.AllReduceResult:
    try:
        return fabric.parse_all_reduce_perf(result.stdout)
    except fabric.AllReducePerfError as e:
        tail = "\n".join(e.lines) or result.tail()
        raise RemoteCommandError(
            run.host.name,
            run.command,
            result.exit_code,
            tail,
            f"{str(e).splitlines()[0]}; the test exited 0 but printed no usable table",
        ) from e


def _stop(p: FabricCheckProps) -> str:
    return fabric.stop_command(f"{p.work_dir}/{PID_NAME}", p.container)


def _targets(p: FabricCheckProps) -> list[HostTarget]:
    return list({run.host.name: run.host for run in p.runs}.values())


def _lines_to(progress: ResourceProgress, run: FabricRun) -> Callable[[str], None] | None:
    """Show the reporting run's lines (rows as they are measured) as the status."""
    if not (progress.enabled and run.reports):
        return None
    return lambda line: progress.status(f"{run.host.name}: {line.strip()}")


def _summary(p: FabricCheckProps, verdict: fabric.GateVerdict) -> str:
    """``fabric check passed on host0+host1 (gloo): in-place busbw 0.61 GB/s at 64 MiB``"""
    where = f"{'+'.join(p.hosts)} ({p.kind})"
    size = fabric.size_label(p.gate_bytes)
    if verdict.busbw_gbps is None:
        return f"fabric check ran on {where}; no row at {size}, nothing gated"
    gate = f" >= {p.min_busbw_gbps:g} GB/s" if p.min_busbw_gbps is not None else " (no gate)"
    return (
        f"fabric check passed on {where}: in-place busbw {verdict.busbw_gbps:g} GB/s at "
        f"{size}{gate}"
    )
