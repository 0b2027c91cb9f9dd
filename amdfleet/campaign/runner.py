"""Run a campaign: each variant up through the Pulumi Automation API (the real CLI),
its sweep points benchmarked, its accuracy scored, then destroyed per the policy.

Every step is journaled (:mod:`amdfleet.campaign.journal`) before the next begins, and
``results.json`` is rebuilt from the journal after each one. A variant's stack is
``<campaign>-<label>`` in a Pulumi project generated in the campaign directory, whose
program is this repository's (so nothing is written under ``stacks/``); its config is
the variant's merged stack sections. Secrets the stack names are read from
``AMDFLEET_SECRET_<KEY>`` (``AMDFLEET_SECRET_APIKEY`` for ``apiKey``); an API key that
is not given is generated at random. They are set with ``pulumi config set --secret``
reading stdin, so they never appear on a command line, in the journal or in results.

Interrupts: the first Ctrl-C stops the running point, journals ``interrupted`` with
where it stopped and destroys every stack this run started (unless the policy is
``keep``); a second one skips the destroys and says which stacks are still up and how
to remove them. An exception destroys too. The Pulumi backend, passphrase and
``PULUMI_HOME`` come from the environment, as for the ``pulumi`` command; what the CLI
says reaches the journal, results and logs with the backend's credentials masked
(:func:`amdfleet.pulumi_backend.mask_backend`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from amdfleet.campaign.journal import CampaignState, Journal, VariantState, replay
from amdfleet.campaign.results import AccuracyResult, build_results, machine_info, write_results
from amdfleet.campaign.spec import Campaign, SweepSpec, Variant, load_label
from amdfleet.config import NAMESPACE
from amdfleet.errors import AmdFleetError, ConfigError
from amdfleet.findings import config_issue
from amdfleet.pulumi_backend import backend_masker, mask_backend
from amdfleet.pulumi_project import write_project
from amdfleet.remote.transport.fanout import fan_out

SECRET_ENV_PREFIX = "AMDFLEET_SECRET_"
DEFAULT_ROOT = Path(".amdfleet/campaigns")


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C) at ``where``."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(where)


class Reporter(Protocol):
    """Where the runner reports what it does (the CLI's live view or plain lines)."""

    def event(self, record: dict[str, Any]) -> None:
        """A journal event was written."""

    def point_started(self, label: str, name: str, index: int, total: int) -> None:
        """Point ``index`` (1-based) of ``total`` of variant ``label`` begins."""

    def message(self, text: str) -> None:
        """A line for the user (interrupt notices, leftovers)."""


def campaign_dir(name: str, override: Path | None = None) -> Path:
    """Where a campaign keeps its journal, results and Pulumi project."""
    return override if override is not None else DEFAULT_ROOT / name


def eta_seconds(
    durations: Sequence[float],
    remaining: int,
    setups: Sequence[float] = (),
    setups_left: int = 0,
) -> float | None:
    """Seconds left: the mean duration of the finished points times the points left,
    plus the mean bring-up time of the variants brought up so far times the variants
    still to bring up. None while a needed mean has nothing to average yet."""
    total = 0.0
    for measured, left in ((durations, remaining), (setups, setups_left)):
        if left <= 0:
            continue
        if not measured:
            return None
        total += sum(measured) / len(measured) * left
    return total


@dataclass
class CampaignRunner:
    """Runs (or resumes) one campaign into ``directory``."""

    campaign: Campaign
    directory: Path
    reporter: Reporter
    project_dir: Path | None = None
    started_stacks: list[str] = field(default_factory=list)
    _presses: int = 0
    _stops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.journal = Journal(self.directory / "journal.jsonl")
        self.results_path = self.directory / "results.json"

    # -- public ---------------------------------------------------------------------------

    def run(self) -> CampaignState:
        """Run every variant not finished yet (a fresh run, or a resume: finished points
        and variants are skipped). Returns the final state; never leaves a stack up unless
        the policy is ``keep`` or a second Ctrl-C said to."""
        self._project()
        self._write("campaign_started", file=str(self.campaign.path), machine=machine_info())
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self._run_groups()
            if self._presses == 0:
                self._write("campaign_done")
            if self.started_stacks:
                keep = self.campaign.spec.teardown == "keep"
                self._report_leftovers("teardown: keep" if keep else "some destroys failed")
        except KeyboardInterrupt:
            self._report_leftovers("second Ctrl-C: destroys skipped")
        except Exception:
            self._destroy_started()  # a crash in the runner itself leaks nothing either
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            self.write_results()
        return replay(self.journal.path)

    def write_results(self) -> Path:
        """Rebuild ``results.json`` from the journal (the report's only input)."""
        results = build_results(self.campaign, replay(self.journal.path))
        return write_results(results, self.results_path)

    # -- the campaign -----------------------------------------------------------------------

    def _run_groups(self) -> None:
        groups: dict[str, list[Variant]] = {}
        for variant in self.campaign.variants:
            key = variant.fleet_key if self.campaign.spec.parallel else "all"
            groups.setdefault(key, []).append(variant)
        if len(groups) == 1:
            self._run_group(next(iter(groups.values())))
            return
        outcome = fan_out({key: functools.partial(self._run_group, g) for key, g in groups.items()})
        outcome.raise_first()

    def _run_group(self, variants: list[Variant]) -> None:
        for variant in variants:
            if self._presses:
                return
            self._run_variant(variant)

    def _run_variant(self, variant: Variant) -> None:
        state = replay(self.journal.path).variant(variant.label)
        if state.finished and not state.may_be_up:
            return
        name = variant.stack.name
        succeeded = False
        interrupted = False
        with self._lock:
            self.started_stacks.append(name)
        try:
            stack = self._stack(variant)
            if not state.finished:
                self._write("variant_up_started", variant=variant.label, stack=name)
                self._up(variant, stack)
                outputs = stack.outputs()
                self._write(
                    "variant_up_done",
                    variant=variant.label,
                    stack=name,
                    outputs=public_outputs(outputs),
                )
                self._check_interrupt(f"{variant.label}: after up")
                self._sweeps(variant, stack, outputs, state)
                self._write("variant_done", variant=variant.label, stack=name)
            succeeded = True
        except Interrupted as stop:
            interrupted = True
            self._write("interrupted", variant=variant.label, stack=name, where=stop.where)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # any failure fails this variant only
            if self._presses:  # Ctrl-C reached the pulumi CLI too and it stopped
                interrupted = True
                self._write("interrupted", variant=variant.label, stack=name, where="up")
                return self._finish(variant, succeeded=False, interrupted=True)
            message = (
                mask_backend(str(error)) if isinstance(error, AmdFleetError) else _describe(error)
            )
            self._write("variant_failed", variant=variant.label, stack=name, error=message)
        self._finish(variant, succeeded=succeeded, interrupted=interrupted)

    def _finish(self, variant: Variant, *, succeeded: bool, interrupted: bool) -> None:
        self.write_results()
        self._teardown(variant, succeeded=succeeded, interrupted=interrupted)

    def _sweeps(
        self, variant: Variant, stack: Any, outputs: dict[str, Any], state: VariantState
    ) -> None:
        endpoint = outputs["endpoint"].value
        api_key = outputs["api_key"].value if "api_key" in outputs else None
        model = str(outputs["model"].value) if "model" in outputs else variant.stack.model.id
        points = self.campaign.points()
        with fetched_tokenizer(variant, stack) as tokenizer:
            for index, (sweep, load) in enumerate(points, 1):
                if (sweep.name, load_label(load)) in state.points:
                    continue
                self.reporter.point_started(
                    variant.label, f"{sweep.name}@{load_label(load)}", index, len(points)
                )
                started = time.monotonic()
                run = self._bench(endpoint, api_key, model, tokenizer, sweep, load)
                if run.interrupted:
                    raise Interrupted(
                        f"{variant.label}: sweep {sweep.name} at load {load_label(load)}"
                    )
                self._write(
                    "point_done",
                    variant=variant.label,
                    stack=variant.stack.name,
                    sweep=sweep.name,
                    kind=sweep.kind,
                    load=load_label(load),
                    seconds=round(time.monotonic() - started, 3),
                    result=run.to_json(),
                )
        accuracy = self.campaign.spec.accuracy
        if accuracy is not None and state.accuracy is None:
            self.reporter.point_started(variant.label, "accuracy", 1, 1)
            result = self._accuracy(endpoint, api_key, model, accuracy)
            if result.interrupted:
                raise Interrupted(f"{variant.label}: accuracy")
            self._write(
                "accuracy_done",
                variant=variant.label,
                stack=variant.stack.name,
                result=AccuracyResult.from_scores(accuracy.task, accuracy.limit, result).to_json(),
            )

    # -- pulumi -----------------------------------------------------------------------------

    def _project(self) -> Path:
        """The Pulumi project the stacks live in: ``project_dir``, or one generated in the
        campaign directory whose program is this repository's."""
        if self.project_dir is not None:
            return self.project_dir
        project = self.directory / "project"
        write_project(project)
        self.project_dir = project
        return project

    def _stack(self, variant: Variant) -> Any:
        from pulumi import automation as auto

        project = self._project()
        stack = auto.create_or_select_stack(stack_name=variant.stack.name, work_dir=str(project))
        values = {
            f"{NAMESPACE}:{key}": auto.ConfigValue(
                value=value if isinstance(value, str) else json.dumps(value)
            )
            for key, value in variant.sections.items()
        }
        stack.set_all_config(values)
        present = {k.partition(":")[2] for k in stack.get_all_config()}
        for key, value in stack_secrets(variant, present).items():
            set_secret(project, variant.stack.name, key, value)
        return stack

    def _up(self, variant: Variant, stack: Any) -> None:
        log, mask = self._log(variant, "up"), backend_masker()
        with log.open("a") as out:
            stack.up(on_output=lambda line: out.write(mask(line) + "\n"), color="never")

    def _teardown(self, variant: Variant, *, succeeded: bool, interrupted: bool) -> None:
        policy = self.campaign.spec.teardown
        if policy == "keep" or (policy == "on-success" and not succeeded and not interrupted):
            return
        name = variant.stack.name
        self._write("destroy_started", variant=variant.label, stack=name)
        try:
            self._destroy(variant)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # the campaign goes on; the stack is reported as up
            message = f"destroy of {name} failed: {_describe(error)}"
            self._write("variant_failed", variant=variant.label, stack=name, error=message)
            return
        with self._lock:
            if name in self.started_stacks:
                self.started_stacks.remove(name)
        self._write("destroy_done", variant=variant.label, stack=name)
        self.write_results()

    def _destroy_started(self) -> None:
        by_name = {v.stack.name: v for v in self.campaign.variants}
        for name in list(self.started_stacks):
            self._teardown(by_name[name], succeeded=False, interrupted=True)

    def _destroy(self, variant: Variant) -> None:
        """Destroy the variant's stack and remove it; a stack that was never created
        counts as destroyed."""
        from pulumi import automation as auto

        name = variant.stack.name
        try:
            stack = auto.select_stack(stack_name=name, work_dir=str(self._project()))
        except auto.StackNotFoundError:
            return
        log, mask = self._log(variant, "destroy"), backend_masker()
        with log.open("a") as out:
            stack.destroy(on_output=lambda line: out.write(mask(line) + "\n"), color="never")
        stack.workspace.remove_stack(name)

    def _log(self, variant: Variant, what: str) -> Path:
        path = self.directory / "logs" / f"{variant.label}-{what}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # -- load -------------------------------------------------------------------------------

    def _bench(
        self,
        endpoint: str,
        api_key: str | None,
        model: str,
        tokenizer: str | None,
        sweep: SweepSpec,
        load: float,
    ) -> Any:
        from amdfleet.plan.verification import scenario_input
        from amdfleet.verify.run import run_scenarios

        async def go() -> Any:
            stop = self._stop_event()
            try:
                runs = await run_scenarios(
                    endpoint,
                    [scenario_input(sweep.scenario(load))],
                    model=model,
                    api_key=api_key,
                    tokenizer=tokenizer,
                    stop=stop,
                )
            finally:
                self._forget(stop)
            return runs[0]

        return asyncio.run(go())

    def _accuracy(self, endpoint: str, api_key: str | None, model: str, spec: Any) -> Any:
        from amdfleet.plan.verification import accuracy_input
        from amdfleet.verify.run import run_accuracy

        async def go() -> Any:
            stop = self._stop_event()
            try:
                return await run_accuracy(
                    endpoint, accuracy_input(spec), model=model, api_key=api_key, stop=stop
                )
            finally:
                self._forget(stop)

        return asyncio.run(go())

    def _stop_event(self) -> asyncio.Event:
        stop = asyncio.Event()
        with self._lock:
            self._stops.append((asyncio.get_running_loop(), stop))
            if self._presses:
                stop.set()
        return stop

    def _forget(self, stop: asyncio.Event) -> None:
        with self._lock:
            self._stops = [(loop, s) for loop, s in self._stops if s is not stop]

    # -- interrupts ---------------------------------------------------------------------------

    def _on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        self._presses += 1
        if self._presses > 1:
            raise KeyboardInterrupt
        self.reporter.message(
            "interrupted: stopping the running point, then destroying the stacks this run "
            "started; press Ctrl-C again to skip the destroys"
        )
        with self._lock:
            for loop, stop in self._stops:
                loop.call_soon_threadsafe(stop.set)

    def _check_interrupt(self, where: str) -> None:
        if self._presses:
            raise Interrupted(where)

    def _report_leftovers(self, why: str) -> None:
        up = list(self.started_stacks)
        if not up:
            self.reporter.message(f"{why}; no stack of this run is up")
            return
        project = self._project()
        lines = [f"{why}; still up: {', '.join(up)}", "remove them with:"]
        lines += [f"  (cd {project} && pulumi destroy --yes -s {name})" for name in up]
        lines.append(f"or continue the campaign: amdfleet campaign resume {self.campaign.path}")
        self.reporter.message("\n".join(lines))

    def _write(self, event: str, **fields: Any) -> None:
        record = self.journal.write(event, **fields)
        self.reporter.event(record)


# --- secrets, outputs, tokenizer ---------------------------------------------------------------


def stack_secrets(
    variant: Variant, present: set[str] | frozenset[str] = frozenset()
) -> dict[str, str]:
    """The secret values to set on the variant's stack, from ``AMDFLEET_SECRET_<KEY>``; a
    missing API key is generated, unless the stack already has one (``present``: a
    resumed stack keeps its key). Raises ConfigError naming the variable for any other
    missing secret."""
    values: dict[str, str] = {}
    issues = []
    for key in variant.stack.secret_keys:
        env = SECRET_ENV_PREFIX + key.upper()
        value = os.environ.get(env)
        if value is None and key in present:
            continue
        if value is None and key == variant.stack.serving.api_key_secret:
            value = secrets.token_hex(24)
        if value is None:
            issues.append(config_issue(f"secrets.{key}", f"{env} is not set", f"export {env}=..."))
            continue
        values[key] = value
    if issues:
        raise ConfigError(issues, f"variant {variant.label}")
    return values


def set_secret(project: Path, stack: str, key: str, value: str) -> None:
    """``pulumi config set --secret`` with the value on stdin (never on a command line)."""
    argv = ["pulumi", "config", "set", "--secret", f"{NAMESPACE}:{key}", "--stack", stack]
    proc = subprocess.run(
        [*argv, "--non-interactive"],
        cwd=project,
        input=value,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        said = mask_backend(proc.stderr.strip())
        raise AmdFleetError(f"setting secret {key} on stack {stack} failed: {said}")


def public_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """The stack outputs worth journaling: every non-secret output's value."""
    return {k: v.value for k, v in outputs.items() if not v.secret and k != "api_key"}


@contextmanager
def fetched_tokenizer(variant: Variant, stack: Any) -> Iterator[str | None]:
    """The model's tokenizer files copied from the head host's staged weights into a temp
    directory, as the verification does (None when the stack has no such host)."""
    from amdfleet.plan import plan
    from amdfleet.providers.verification import TOKENIZER_FILES
    from amdfleet.remote.transport.hosts import open_host

    target = plan(variant.stack).head.target
    path = variant.stack.weights.local_path or _weights_path(stack)
    if target is None or not path:
        yield None
        return
    with (
        tempfile.TemporaryDirectory(prefix="amdfleet-tokenizer-") as tmp,
        open_host(target) as conn,
    ):
        for name in TOKENIZER_FILES:
            content = conn.get(f"{path.rstrip('/')}/{name}")
            if content is not None:
                (Path(tmp) / name).write_bytes(content)
        yield tmp if (Path(tmp) / "tokenizer.json").exists() else None


def _weights_path(stack: Any) -> str | None:
    deployment = stack.export_stack().deployment or {}
    for resource in deployment.get("resources") or []:
        outputs = resource.get("outputs") or {}
        if "repo" in outputs and isinstance(outputs.get("path"), str):
            return str(outputs["path"])
    return None


def _describe(error: BaseException) -> str:
    """The error's type and last lines (a CLI error's own output), credentials masked."""
    text = mask_backend(str(error)).strip().splitlines()
    tail = "\n".join(text[-15:]) if text else ""
    return f"{type(error).__name__}: {tail}"


def load_state(directory: Path) -> CampaignState:
    """The state a campaign directory's journal records."""
    return replay(directory / "journal.jsonl")


def run_campaign(
    campaign: Campaign,
    directory: Path,
    reporter: Reporter,
    *,
    project_dir: Path | None = None,
    write_report: Callable[[Path, Path], Sequence[Path]] | None = None,
) -> CampaignState:
    """Run (or resume) ``campaign`` in ``directory``; then write the report when a
    report writer is given. Returns the final state."""
    runner = CampaignRunner(campaign, directory, reporter, project_dir=project_dir)
    state = runner.run()
    if write_report is not None:
        try:
            paths = write_report(runner.results_path, directory / "report")
            reporter.message("report: " + ", ".join(str(p) for p in paths))
        except Exception as error:  # the results stay; the report is extra
            reporter.message(f"the report could not be written: {_describe(error)}")
    reporter.message(f"results: {runner.results_path}")
    return state
