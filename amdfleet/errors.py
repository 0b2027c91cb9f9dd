"""The amdfleet error tree.

Every error the project raises on purpose derives from :class:`AmdFleetError`, so the
CLI and the Pulumi program can turn it into a clear message in one place. Each subclass
carries the context a user needs to fix the problem (a field path, a host and command,
a metric) and its ``str()`` is a complete message: what failed, where, and a hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from amdfleet.findings import Finding, config_issue


class AmdFleetError(Exception):
    """Root of every error amdfleet raises on purpose."""


def field_path(loc: Sequence[Any]) -> str:
    """A validation location as a field path: ``("fleet", "hosts", 0, "address")`` →
    ``fleet.hosts[0].address``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def unknown_key_issue(key: str, valid: Iterable[str], parent: Sequence[Any] = ()) -> Finding:
    """The issue for an unknown ``key`` under the location ``parent``: the closest valid
    key, else the valid ones."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
    return config_issue(field_path((*parent, key)), "unknown key", hint)


class ConfigError(AmdFleetError):
    """A stack configuration is invalid; nothing has been provisioned.

    Holds every issue found (each a :class:`~amdfleet.findings.Finding` whose subject is
    the field path), so a user fixes them all in one pass.
    """

    def __init__(self, issues: Sequence[Finding], source: str = "") -> None:
        self.issues = tuple(issues)
        self.source = source
        super().__init__(self._format())

    @property
    def paths(self) -> tuple[str, ...]:
        """The field paths of all issues, in order."""
        return tuple(issue.subject for issue in self.issues)

    heading = "invalid stack configuration"

    def _format(self) -> str:
        where = f" in {self.source}" if self.source else ""
        count = len(self.issues)
        head = f"{self.heading}{where} ({count} problem{'s' * (count != 1)}):"
        return "\n".join([head, *(f"  - {issue}" for issue in self.issues)])


class PlanError(ConfigError):
    """The configuration is well-formed but cannot be deployed as asked (parallelism,
    memory, engine/hardware support). Raised by the planner before any remote action."""

    heading = "stack cannot be deployed as written"


class PropsError(ConfigError):
    """A provider received properties its props model rejects (a typo'd key, a wrong
    type): the program and the provider disagree, or the state was written by another
    amdfleet version. Each issue names the property path."""

    heading = "invalid resource properties"

    def _format(self) -> str:
        hint = (
            "  hint: the program and the provider must come from the same amdfleet version; "
            "a key the message calls unknown is a typo or a property this version dropped"
        )
        return f"{super()._format()}\n{hint}"


class RenderError(AmdFleetError):
    """A template could not be rendered (a template bug or a missing value)."""


def quoted_lines(output: str) -> str:
    """A command's output as an error quotes it: each line behind ``    | ``."""
    return "\n".join(f"    | {line}" for line in output.splitlines()) or "    | (no output)"


class RemoteError(AmdFleetError):
    """Something failed on a remote host."""

    def __init__(self, host: str, message: str, hint: str = "") -> None:
        self.host = host
        self.hint = hint
        text = f"[{host}] {message}"
        super().__init__(f"{text}\n  hint: {hint}" if hint else text)


class HostUnreachableError(RemoteError):
    """Connecting to a host failed in a way that may pass by itself: the TCP connect was
    refused, timed out or found no route to the host, or the connection was closed
    before the SSH banner (an sshd still starting). :func:`amdfleet.remote.transport.ssh.connect`
    retries these, and raises one naming the attempts made and the time they took once
    it gives up.

    ``reason`` is the last attempt's cause; ``attempts`` and ``elapsed`` (seconds) are
    set on the error that ends the retries, None on a single attempt's error.
    """

    def __init__(
        self,
        host: str,
        reason: str,
        hint: str = "",
        *,
        attempts: int | None = None,
        elapsed: float | None = None,
    ) -> None:
        self.reason = reason
        self.attempts = attempts
        self.elapsed = elapsed
        message = reason
        if attempts is not None:
            plural = "s" * (attempts != 1)
            message += f"; gave up after {attempts} attempt{plural} over {elapsed or 0.0:.1f}s"
        super().__init__(host, message, hint)


class HostKeyMismatchError(RemoteError):
    """The host presented a key other than the pinned one; the connection was refused."""


class RemoteCommandError(RemoteError):
    """A command on a host exited non-zero or timed out."""

    def __init__(
        self,
        host: str,
        command: str,
        exit_code: int | None,
        output_tail: str,
        hint: str = "",
    ) -> None:
        self.command = command
        self.exit_code = exit_code
        self.output_tail = output_tail
        status = "timed out" if exit_code is None else f"exited {exit_code}"
        tail = quoted_lines(output_tail)
        message = f"command {status}: {command}\n  last lines of output:\n{tail}"
        super().__init__(host, message, hint)


class PreflightError(AmdFleetError):
    """One or more hosts failed preflight checks; every failed check (a
    :class:`~amdfleet.findings.Finding` about a host, a node or the cluster) is listed
    under ``heading``."""

    def __init__(self, failures: Sequence[Finding], *, heading: str = "preflight failed") -> None:
        self.failures = tuple(failures)
        lines = [f"{heading}:"]
        for f in self.failures:
            hint = f"\n      hint: {f.hint}" if f.hint else ""
            lines.append(f"  - [{f.subject}] {f.check}: {f.detail}{hint}")
        super().__init__("\n".join(lines))


class CloudAPIError(AmdFleetError):
    """A cloud provider's API refused or failed a request."""

    def __init__(self, provider: str, operation: str, status: int | None, detail: str) -> None:
        self.provider = provider
        self.operation = operation
        self.status = status
        self.detail = detail
        """The cloud's own words (or the transport failure)."""
        where = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{provider}: {operation} failed ({where}): {detail}")


class EngineCommandRejected(RemoteError):
    """The engine in the real image (or virtualenv) refused a rendered command line."""

    def __init__(
        self,
        host: str,
        engine: str,
        nodes: str,
        command: str,
        exit_code: int | None,
        output_tail: str,
    ) -> None:
        self.engine = engine
        self.nodes = nodes
        self.command = command
        self.exit_code = exit_code
        self.output_tail = output_tail
        status = "did not answer in time" if exit_code is None else f"exited {exit_code}"
        said = quoted_lines(output_tail)
        message = (
            f"{engine} refuses the command of {nodes} (its own parser {status}); nothing "
            f"was staged and no engine started\n  check: {command}\n  the engine says:\n{said}"
        )
        super().__init__(
            host,
            message,
            "fix engine.extra_args / engine.extra_env (or the stack's engine.version / image) "
            "so the pinned engine accepts it, then `pulumi up` again",
        )


class EngineStartError(RemoteError):
    """The engine did not become healthy before its deadline."""


class VerificationFailed(AmdFleetError):
    """A verification run did not meet the stack's thresholds.

    ``failures`` holds a :class:`~amdfleet.findings.Finding` for each failed threshold
    (:meth:`~amdfleet.findings.Finding.threshold`: the metric, expected and observed) and
    ``report`` the full verdict table.
    """

    def __init__(self, failures: Sequence[Finding], report: str = "") -> None:
        self.failures = tuple(failures)
        self.report = report
        lines = ["verification failed:"]
        lines += [f"  - {f.subject}: {f.detail}" for f in self.failures]
        if report:
            lines += ["", report]
        super().__init__("\n".join(lines))


class CloudInstanceError(AmdFleetError):
    """A cloud instance could not be brought up or removed: names the instance, the
    cloud, the region, the step that failed, what became of the instance and what to do.
    """

    def __init__(
        self,
        provider: str,
        region: str,
        instance: str,
        step: str,
        detail: str,
        *,
        outcome: str = "",
        hint: str = "",
    ) -> None:
        self.provider = provider
        self.region = region
        self.instance = instance
        self.step = step
        self.detail = detail
        lines = [f"{provider} instance {instance} in {region}: {step} failed: {detail}"]
        if outcome:
            lines.append(f"  {outcome}")
        if hint:
            lines.append(f"  hint: {hint}")
        super().__init__("\n".join(lines))


class ImageBuildRefused(AmdFleetError):
    """An engine image build that would not run on the fleet's GPUs, refused before it
    starts (``hours``: the build time it would have wasted)."""

    def __init__(self, message: str, hint: str, hours: float) -> None:
        self.hint = hint
        self.hours = hours
        super().__init__(f"{message}\n  hint: {hint}")
