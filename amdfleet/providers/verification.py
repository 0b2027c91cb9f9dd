"""Verification: the gate between "deployed" and "ready".

Runs the stack's verification (the plan's
:class:`~amdfleet.plan.models.VerificationInput`: output parity, serving benchmarks and
the accuracy check, see :mod:`amdfleet.verify`) against the endpoint once the engine is
up, and records the outcome whatever it is: ``passed``, the verdict rows in ``result``,
``verified_at`` (when the run finished, UTC, ISO 8601), and for a failed run ``failures``
and ``verdict_table``. A failed run is a record too, not
a failed operation, so the state and the stack's ``ready`` output say ``false`` instead of
keeping the last passing run's ``true``;
:class:`~amdfleet.providers.readiness.VerificationGate` then fails ``pulumi up`` with the
verdict table. It re-runs when the engine (rendered content, image
digest), the endpoint or the spec changes, and after a failed run; otherwise not, and then
the state keeps the last run's outputs, ``verified_at`` included (state written before
``verified_at`` existed reads with it null until the next run).

The tokenizer comes from the head node's staged weights (copied over the connection), so
random prompts have exact token lengths even for a model that exists only on the hosts.
Reports (JSON, markdown, plots) are written under ``report_dir`` on the machine running
Pulumi.

Progress (:mod:`amdfleet.providers.progress`): the resource's status shows the scenario
running and its requests done out of its total, then the GSM8K problems answered and how
many were right so far; each finished scenario, the accuracy check and a passed
verification leave a note with their headline numbers.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field

from amdfleet.errors import AmdFleetError
from amdfleet.plan.models import VerificationInput
from amdfleet.providers.progress import ResourceProgress
from amdfleet.providers.props import ProviderProps, changed_keys, plain
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.transport.connection import Redactor
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget
from amdfleet.verify import PARITY_PHASE

if TYPE_CHECKING:
    from amdfleet.verify import BenchmarkRun, VerificationResult
    from amdfleet.verify.gsm8k import AccuracyResult, Scored

RERUN_ON = ("base_url", "model", "spec", "engine_fingerprint", "parity_reference_sha256")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class VerificationProps(ProviderProps):
    """Verification's properties: what to verify against which endpoint (inputs; the API
    key, the engine's fingerprint and the tokenizer path are Outputs on the program side,
    passed to :class:`Verification` apart), and the outcome (outputs)."""

    SECRET_FIELDS = ("api_key",)

    base_url: str = Field(description="The endpoint's base URL (without /v1).")
    model: str = Field(description="The served model name.")
    api_key: str | None = Field(None, description="Secret: the endpoint's API key.")
    spec: VerificationInput = Field(
        description="What the verification runs and judges, as the plan resolved it."
    )
    engine_fingerprint: str | None = Field(
        None,
        description="Rendered content, image digests and start time of the engine (re-runs "
        "on change: a restarted engine is verified again).",
    )
    tokenizer_host: HostTarget | None = Field(
        None, description="The host whose staged weights hold the tokenizer."
    )
    tokenizer_path: str | None = Field(
        None, description="The staged weights' directory on that host (None: no tokenizer)."
    )
    report_dir: str = Field(description="Where reports go on the machine running Pulumi.")
    parity_reference_sha256: str | None = Field(
        None,
        description="The parity reference file's sha256 (a new reference re-runs the "
        "verification).",
    )
    passed: bool | None = Field(None, description="Output: whether every threshold was met.")
    result: dict[str, Any] | None = Field(
        None, description="Output: metrics, thresholds and verdict rows."
    )
    failures: list[tuple[str, str, str]] | None = Field(
        None, description="Output: (metric, expected, observed) of each failed threshold."
    )
    verdict_table: str | None = Field(
        None, description="Output: the verdict table of a failed run ('' when passed)."
    )
    verified_at: str | None = Field(
        None,
        description="Output: when the last run finished (UTC, ISO 8601, seconds), passed or "
        "not; null in state written before it was recorded.",
    )


class VerificationProvider(ResourceProvider):
    """Runs the verification. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Run the verification and record its outcome (``passed`` false when a threshold
        is not met; the gate fails the update then). Raises only when it cannot run."""
        p = VerificationProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress:
            outs = _verify(p, progress)
        return CreateResult(id_=f"verification:{p.model}", outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Verification results are a record of a past run: refresh keeps them."""
        return ReadResult(id_=id_, outs=VerificationProps.from_inputs(props).to_outputs())

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Re-run when the engine, the endpoint or the spec changed, or the last run
        failed (a plain ``pulumi up`` retries it). Compares raw values (``news`` may hold
        unknowns)."""
        failed = plain(olds.get("passed")) is False
        return DiffResult(changes=failed or bool(changed_keys(olds, news, RERUN_ON)), replaces=[])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Run the verification again."""
        p = VerificationProps.from_inputs(news)
        with ResourceProgress.for_resource(news) as progress:
            return UpdateResult(outs=_verify(p, progress))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove (reports stay on the machine running Pulumi)."""


class Verification(
    AmdFleetResource, name="Verification", provider=VerificationProvider, props=VerificationProps
):
    """The verification run: ``passed``, ``result`` (metrics, thresholds, verdict),
    ``verified_at`` (when it finished) and, when it failed, ``failures`` (metric, expected,
    observed) and ``verdict_table``."""

    passed: pulumi.Output[bool]
    result: pulumi.Output[dict[str, Any]]
    failures: pulumi.Output[list[list[str]]]
    verdict_table: pulumi.Output[str]
    verified_at: pulumi.Output[str | None]

    def __init__(
        self,
        name: str,
        props: VerificationProps | pulumi.Output[VerificationProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        api_key: pulumi.Input[str] | None,
        engine_fingerprint: pulumi.Input[str],
        tokenizer_path: pulumi.Input[str] | None,
    ):
        inputs = VerificationProps.inputs_of(
            props,
            api_key=api_key,
            engine_fingerprint=engine_fingerprint,
            tokenizer_path=tokenizer_path,
        )
        super().__init__(name, inputs, opts)


def _verify(p: VerificationProps, progress: ResourceProgress) -> dict[str, Any]:
    """Run the verification; the API key is masked in its outputs and in any error (an
    endpoint's error body is quoted in them, and a proxy may echo the request)."""
    redact = Redactor([p.api_key] if p.api_key else [])
    try:
        outs = _run(p, progress)
    except AmdFleetError as e:
        text = str(e)
        if redact(text) == text:
            raise
        raise AmdFleetError(redact(text)) from None  # the cause's text holds the key
    masked: dict[str, Any] = _masked(outs, redact)
    return masked


def _masked(value: Any, redact: Redactor) -> Any:
    """``value`` with ``redact`` applied to every string in it (dicts and lists walked)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _masked(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, redact) for v in value]
    return value


def _run(p: VerificationProps, progress: ResourceProgress) -> dict[str, Any]:
    from amdfleet.verify import render_verdict_table, run_verification

    with tempfile.TemporaryDirectory(prefix="amdfleet-tokenizer-") as tmp:
        tokenizer = _fetch_tokenizer(p, Path(tmp), progress)
        display = _VerificationDisplay(p.spec, progress)
        result = run_verification(
            p.spec,
            base_url=p.base_url,
            model=p.model,
            api_key=p.api_key,
            tokenizer=tokenizer,
            out_dir=Path(p.report_dir),
            progress=display,
            on_run=display.run_done,
            on_scored=display.scored,
        )
        display.finished(result)
    return p.to_outputs(
        passed=result.passed,
        result=result.to_dict(),
        failures=[[f.subject, f.expected, f.observed] for f in result.failures()],
        verdict_table="" if result.passed else render_verdict_table(result),
        verified_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class _VerificationDisplay:
    """The verification's phases as the resource's status, and its results as notes
    (implements :class:`amdfleet.verify.run.Progress`)."""

    def __init__(self, spec: VerificationInput, progress: ResourceProgress) -> None:
        self._spec = spec
        self._progress = progress
        self._scenarios_done = 0
        self._phase = ""
        self._unit = "requests"
        self._total = self._done = self._correct = 0

    def start(self, label: str, total: int) -> None:
        """The parity check, a scenario or (after the last one) the accuracy check begins."""
        self._total, self._done, self._correct = total, 0, 0
        if label == PARITY_PHASE:
            self._phase, self._unit = PARITY_PHASE, "prompts"
        elif self._scenarios_done < len(self._spec.scenarios):
            count = len(self._spec.scenarios)
            self._phase = f"benchmark {label} ({self._scenarios_done + 1} of {count})"
            self._unit = "requests"
        else:
            shots = self._spec.accuracy.num_fewshot if self._spec.accuracy else 0
            self._phase = f"accuracy ({label}, {shots}-shot)"
            self._unit = "problems"
        self._progress.step(f"{self._phase}: 0 of {total} {self._unit}")

    def advance(self) -> None:
        """One request finished (or one problem was scored)."""
        self._done += 1
        text = f"{self._phase}: {self._done} of {self._total} {self._unit}"
        if self._unit == "problems":
            text += f", {self._correct} right so far"
        self._progress.status(text)

    def finish(self) -> None:
        """The phase ended; its note comes from :meth:`run_done` or :meth:`finished`."""

    def scored(self, scored: Scored) -> None:
        """A GSM8K problem was scored (called before :meth:`advance` counts it)."""
        self._correct += int(scored.flexible_correct)

    def run_done(self, run: BenchmarkRun) -> None:
        """A scenario finished: its headline numbers."""
        self._scenarios_done += 1
        self._progress.note(f"benchmark {run.scenario.name}: {_headline(run)}")

    def finished(self, result: VerificationResult) -> None:
        """The parity and accuracy notes and the verdict (what failed, when something did)."""
        if result.parity is not None:
            parity = result.parity
            self._progress.note(
                f"output parity: {parity.matched} of {len(parity.reference.prompts)} prompts "
                f"match the reference over {parity.tokens} tokens ({parity.dtype})"
            )
        if result.accuracy is not None:
            self._progress.note(f"accuracy: {_accuracy(result.accuracy)}")
        if result.passed:
            checks = sum(1 for row in result.rows if row.passed is not None)
            first = f": {_headline(result.runs[0])}" if result.runs else ""
            self._progress.note(f"verification passed ({checks} checks){first}")
        else:
            failed = "; ".join(
                f"{f.subject} {f.observed} (expected {f.expected})" for f in result.failures()
            )
            self._progress.note(f"verification failed: {failed}")


def _headline(run: BenchmarkRun) -> str:
    """``689 tok/s, p99 TTFT 325 ms, 200 of 200 requests ok``"""
    m = run.metrics
    p99 = m.latency["ttft"].percentile(99.0) if "ttft" in m.latency else None
    ttft = f", p99 TTFT {p99:.0f} ms" if p99 is not None else ""
    sent = m.completed + m.failed
    return f"{m.output_throughput:.0f} tok/s{ttft}, {m.completed} of {sent} requests ok"


def _accuracy(accuracy: AccuracyResult) -> str:
    """``GSM8K flexible-extract 0.781, strict-match 0.774 over 1319 problems``"""
    return (
        f"GSM8K flexible-extract {accuracy.flexible_extract.value:.3f}, strict-match "
        f"{accuracy.strict_match.value:.3f} over {len(accuracy.samples)} problems"
    )


def _fetch_tokenizer(p: VerificationProps, into: Path, progress: ResourceProgress) -> str | None:
    path = p.tokenizer_path
    if not path or p.tokenizer_host is None:
        return None
    progress.step(f"copying the tokenizer from {p.tokenizer_host.name}:{path}")
    with open_host(p.tokenizer_host) as conn:
        for name in TOKENIZER_FILES:
            content = conn.get(f"{path.rstrip('/')}/{name}")
            if content is not None:
                (into / name).write_bytes(content)
    return str(into) if (into / "tokenizer.json").exists() else None
