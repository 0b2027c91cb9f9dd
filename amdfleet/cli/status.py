"""``amdfleet status STACK``: is a deployed stack's endpoint serving right now?

A stack's outputs (``ready``, ``verified_at``) change only on ``pulumi up``; this command
looks at the live endpoint instead. It reads STACK's outputs and state through the
Automation API (the real ``pulumi`` CLI underneath, with the backend and passphrase the
``pulumi`` command would use), then runs every check at once (one
:func:`~amdfleet.remote.transport.fanout.fan_out`), each bounded by ``--timeout``:

- **engine** on every node: connected as the providers connect (the host target the engine
  resource recorded in the state, its pinned host key; one attempt), the node's supervisor
  chosen from its facts as at deploy time, and its
  :meth:`~amdfleet.remote.supervision.Supervisor.running_command` (an adopted engine,
  which no amdfleet supervisor runs: its pid is still the process adopted);
- **models**: ``GET <endpoint>/models`` lists the stack's model;
- **completion**: one real token (``max_tokens`` 1) from ``<endpoint>/completions`` with
  the stack's API key;
- **verification**: the last verification passed (the ``ready`` output; not checked
  when the stack has no verification).

The verdict: **serving** when every check passed; **down** when no token came back (the
endpoint does not serve, whatever else is true); **degraded** when a token came back but
another check failed (a node's engine not running or not reachable, the model not listed,
the last verification failed). Read-only: nothing on the stack or its hosts changes. The
API key is never printed (every text is masked with it, ``--json`` too), nor anything else
that looks secret (:func:`amdfleet.secretscan.redact`: a token in an engine's error body).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click

from amdfleet.errors import AmdFleetError
from amdfleet.pulumi_backend import mask_backend
from amdfleet.remote.transport.target import HostTarget
from amdfleet.tables import table

Verdict = Literal["serving", "degraded", "down"]
EXIT_CODES: dict[Verdict, int] = {"serving": 0, "degraded": 3, "down": 4}
DEFAULT_TIMEOUT_S = 10.0
COMPLETION_PROMPT = "Hello"
ENGINE_TYPES = ("EngineService", "EngineCluster")
_DETAIL_LINES = 3


@dataclass(frozen=True)
class Check:
    """One live check's result: ``name`` (engine, models, completion, verification), what
    it looked at (a node, the endpoint, the stack), whether it passed and why."""

    name: str
    subject: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The check as ``--json`` prints it."""
        return {"check": self.name, "subject": self.subject, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class EngineNode:
    """Where one node's engine runs, as its engine resource recorded it in the state."""

    name: str
    host: HostTarget
    remote_dir: str
    unit: str
    container: str | None
    adopted: tuple[int, str] | None = None
    """An adopted engine's pid and start time (it runs unsupervised; README "Adopting a
    running engine")."""


@dataclass(frozen=True)
class StackView:
    """What the status needs of a stack: its outputs and its engine nodes.
    ``api_key`` is the secret output's value: used for the completion, never printed."""

    stack: str
    endpoint: str
    model: str
    ready: bool
    verified_at: str | None
    verification: Mapping[str, Any]
    nodes: tuple[EngineNode, ...]
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StatusReport:
    """The verdict on a stack, with every check, the last verification and the time taken."""

    view: StackView
    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 serving, 3 degraded, 4 down (1 and 2 are click's errors)."""
        return EXIT_CODES[self.verdict]

    def to_json(self) -> dict[str, Any]:
        """One JSON document: the verdict, each check, the last verification (no API key)."""
        view = self.view
        return {
            "stack": view.stack,
            "verdict": self.verdict,
            "reason": self.reason,
            "endpoint": view.endpoint,
            "model": view.model,
            "ready": view.ready,
            "verified_at": view.verified_at,
            "verification": verification_summary(view.verification),
            "checks": [c.to_json() for c in self.checks],
            "seconds": round(self.seconds, 3),
        }


@click.command("status")
@click.argument("stack")
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory of the Pulumi project (Pulumi.yaml) the stack belongs to; the backend "
    "and passphrase are the ones the `pulumi` command would use (PULUMI_BACKEND_URL, "
    "PULUMI_CONFIG_PASSPHRASE).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.5, max=300),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds each live check may take (an SSH connect and command, an HTTP request).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def status_command(stack: str, project_dir: Path, timeout_s: float, as_json: bool) -> None:
    """Check STACK's deployed endpoint live: the engine on every node, the model, one token.

    Reads the stack's outputs and state (Automation API), then checks at once, each within
    --timeout: the engine on every node (over SSH as the providers connect, the node's
    supervisor asked whether it runs), GET <endpoint>/models lists the stack's model, and
    one completion token with the stack's API key; plus whether the last verification
    passed. Prints the verdict with each check's result and why, and the last
    verification's time (verified_at) and summary. Read-only; neither the API key nor
    anything else that looks secret (a token an engine's error quotes) is printed.

    Verdicts and exit status: 0 serving (every check passed); 3 degraded (a token came
    back, but a node's engine is not running or not reachable, the model is not listed,
    or the last verification failed); 4 down (no token came back); 1 the stack could not
    be read (no such stack, nothing deployed, the backend or passphrase); 2 a usage error.
    """
    started = time.monotonic()
    view = read_stack(project_dir.resolve(), stack)
    report = check_stack(view, timeout_s=timeout_s, started=started)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(render_report(report))
    raise SystemExit(report.exit_code)


# ------------------------------------------------------------------ reading the stack


def read_stack(project_dir: Path, stack: str) -> StackView:
    """STACK's outputs and engine nodes, read with the Automation API from the project in
    ``project_dir`` (no stack is selected, nothing is written).

    Raises AmdFleetError when the stack cannot be read or has nothing deployed.
    """
    from pulumi import automation as auto

    try:
        workspace = auto.LocalWorkspace(work_dir=str(project_dir))
        outputs = {k: v.value for k, v in workspace.stack_outputs(stack).items()}
        state = workspace.export_stack(stack).deployment or {}
    except FileNotFoundError as e:
        raise AmdFleetError(
            f"cannot read stack {stack}: the pulumi CLI was not found ({e.strerror}: "
            f"{e.filename})\n  hint: put the pulumi CLI on PATH (scripts/install-pulumi prints "
            "its directory)"
        ) from None
    except auto.CommandError as e:
        said = str(e).partition("stderr:")[2] or str(e)  # the CLI's own words, not the wrapper
        lines = [line.strip() for line in mask_backend(said).strip().splitlines() if line.strip()]
        tail = "\n".join(f"  | {line}" for line in lines[-6:])
        raise AmdFleetError(
            f"cannot read stack {stack} of the project in {project_dir}:\n{tail}\n"
            "  hint: check the stack name (`pulumi stack ls`), --project-dir, and that "
            "PULUMI_BACKEND_URL and PULUMI_CONFIG_PASSPHRASE are the ones the stack uses"
        ) from None
    return stack_view(stack, outputs, state)


def stack_view(stack: str, outputs: Mapping[str, Any], state: Mapping[str, Any]) -> StackView:
    """The view of a stack from its outputs and exported state (``deployment``).

    Raises AmdFleetError when the outputs are not an amdfleet deployment's.
    """
    missing = [k for k in ("endpoint", "model", "ready") if outputs.get(k) is None]
    if missing:
        what = "it has no outputs: nothing is deployed" if not outputs else "it lacks outputs"
        raise AmdFleetError(
            f"stack {stack}: {what} ({', '.join(missing)} missing)\n"
            "  hint: `pulumi up` deploys it; `amdfleet status` checks a deployed amdfleet stack"
        )
    api_key = outputs.get("api_key")
    return StackView(
        stack=stack,
        endpoint=str(outputs["endpoint"]).rstrip("/"),
        model=str(outputs["model"]),
        ready=outputs["ready"] is True,
        verified_at=outputs.get("verified_at"),
        verification=outputs.get("verification") or {},
        nodes=engine_nodes(state),
        api_key=str(api_key) if api_key else None,
    )


def engine_nodes(state: Mapping[str, Any]) -> tuple[EngineNode, ...]:
    """Every engine node recorded in an exported state: an EngineService's node, or each
    node of an EngineCluster (head first), with the host target it was deployed with."""
    from amdfleet.providers.engine_node import unit_name
    from amdfleet.providers.resource import LEGACY_TYPE_PREFIX, type_token

    types = {type_token(name): name for name in ENGINE_TYPES}
    types.update({LEGACY_TYPE_PREFIX + name: name for name in ENGINE_TYPES})
    nodes: list[EngineNode] = []
    for resource in state.get("resources") or []:
        kind = types.get(str(resource.get("type", "")))
        outputs = resource.get("outputs") or {}
        if kind is None:
            continue
        entries = [outputs] if kind == "EngineService" else list(outputs.get("nodes") or [])
        for entry in entries:
            host = HostTarget.model_validate(entry["host"])
            remote_dir = str(entry["remote_dir"])
            nodes.append(
                EngineNode(
                    name=str(entry.get("name") or host.name),
                    host=host,
                    remote_dir=remote_dir,
                    unit=unit_name(entry.get("files") or {}, remote_dir),
                    container=entry.get("container"),
                    adopted=_adopted(entry.get("adopted")),
                )
            )
    return tuple(nodes)


# ------------------------------------------------------------------ checking it live


def check_stack(view: StackView, *, timeout_s: float, started: float | None = None) -> StatusReport:
    """Run every live check at once and judge them (``started``: a monotonic time the
    report's ``seconds`` count from; default now)."""
    from amdfleet import secretscan
    from amdfleet.remote.transport.connection import Redactor
    from amdfleet.remote.transport.fanout import fan_out

    began = time.monotonic() if started is None else started
    endpoint = (view.endpoint, view.model, view.api_key, timeout_s)
    calls: dict[str, Callable[[], Check]] = {
        f"engine:{node.name}": functools.partial(check_engine, node, view.api_key, timeout_s)
        for node in view.nodes
    }
    calls["models"] = functools.partial(check_models, *endpoint)
    calls["completion"] = functools.partial(check_completion, *endpoint)
    outcome = fan_out(calls)
    known = Redactor([view.api_key] if view.api_key else [])

    def redact(text: str) -> str:
        # The known key (any length) first, then whatever else looks secret: a token
        # in an engine's error body or a log line the key does not cover.
        return secretscan.redact(known(text))

    checks = [_masked(_outcome_check(key, outcome.outcome(key)), redact) for key in calls]
    if not view.nodes:
        checks.insert(0, Check("engine", "stack", False, "no engine resource in the state"))
    verification = verification_check(view)
    if verification is not None:
        checks.append(verification)
    verdict, reason = judge(checks)
    return StatusReport(view, verdict, reason, tuple(checks), time.monotonic() - began)


def judge(checks: Sequence[Check]) -> tuple[Verdict, str]:
    """The verdict and why: serving when every check passed; down when the completion
    failed (or was not checked); degraded when a token came back but another check
    failed. The reason names each failed check's subject and detail."""
    failed = [c for c in checks if not c.ok]
    completion = [c for c in checks if c.name == "completion"]
    token = bool(completion) and all(c.ok for c in completion)
    if token and not failed:
        return "serving", "every check passed"
    reason = "; ".join(f"{c.subject}: {c.name} {c.detail}" for c in failed)
    if not token:
        return "down", reason or "no completion was checked"
    return "degraded", reason


def check_engine(node: EngineNode, api_key: str | None, timeout_s: float) -> Check:
    """Whether ``node``'s supervisor reports its engine running (one connection attempt;
    raises the connection's error when the host cannot be reached)."""
    from amdfleet.providers.engine_node import node_supervisor
    from amdfleet.remote.engine import EngineLayout
    from amdfleet.remote.transport.hosts import open_host
    from amdfleet.remote.transport.retry import NO_RETRY

    secrets = [api_key] if api_key else []
    if node.adopted is not None:
        return _check_adopted(node, node.adopted, secrets, timeout_s)
    with open_host(node.host, secrets=secrets, timeout=timeout_s, retry=NO_RETRY) as conn:
        layout = EngineLayout(node.remote_dir)
        supervisor = node_supervisor(conn, layout, node.unit, node.container, timeout=timeout_s)
        running = conn.run(supervisor.running_command(), timeout=timeout_s, check=False).ok
    kind = f"{supervisor.kind} supervisor"
    if running:
        return Check("engine", node.name, True, f"running ({kind})")
    return Check(
        "engine",
        node.name,
        False,
        f"not running (the {kind} reports it stopped; its log: {supervisor.log_source} "
        f"on {node.host.name})",
    )


def _check_adopted(
    node: EngineNode, adopted: tuple[int, str], secrets: list[str], timeout_s: float
) -> Check:
    """An adopted engine runs while its pid is the process adopted."""
    from amdfleet.remote.adoption import same_process
    from amdfleet.remote.transport.hosts import open_host
    from amdfleet.remote.transport.retry import NO_RETRY

    pid, started = adopted
    with open_host(node.host, secrets=secrets, timeout=timeout_s, retry=NO_RETRY) as conn:
        running = conn.run(same_process(pid, started), timeout=timeout_s, check=False).ok
    if running:
        return Check("engine", node.name, True, f"running (adopted, pid {pid}, unsupervised)")
    return Check(
        "engine", node.name, False, f"not running (the adopted engine, pid {pid}, is gone)"
    )


def _adopted(value: Any) -> tuple[int, str] | None:
    """The pid and start time of an engine's ``adopted`` output (None: amdfleet started
    it). Its secret key hashes are not read."""
    if not isinstance(value, Mapping) or "pid" not in value:
        return None
    return int(value["pid"]), str(value.get("started", ""))


def check_models(endpoint: str, model: str, api_key: str | None, timeout_s: float) -> Check:
    """Whether ``GET <endpoint>/models`` answers 200 listing ``model``."""
    import httpx

    url = f"{endpoint}/models"
    try:
        reply = httpx.get(url, headers=_auth(api_key), timeout=timeout_s)
    except httpx.HTTPError as e:
        return Check("models", "endpoint", False, f"GET {url}: {_http_failure(e, timeout_s)}")
    if reply.status_code != 200:
        return Check("models", "endpoint", False, f"GET {url}: {_status(reply)}")
    try:
        listed = [str(m.get("id")) for m in reply.json().get("data") or []]
    except (ValueError, AttributeError):
        return Check("models", "endpoint", False, f"GET {url}: not a model list")
    if model not in listed:
        shown = ", ".join(listed) or "none"
        return Check("models", "endpoint", False, f"{model} is not listed (listed: {shown})")
    return Check("models", "endpoint", True, f"lists {model}")


def check_completion(endpoint: str, model: str, api_key: str | None, timeout_s: float) -> Check:
    """Whether ``POST <endpoint>/completions`` returns one token (``max_tokens`` 1)."""
    import httpx

    url = f"{endpoint}/completions"
    body = {"model": model, "prompt": COMPLETION_PROMPT, "max_tokens": 1}
    began = time.monotonic()
    try:
        reply = httpx.post(url, json=body, headers=_auth(api_key), timeout=timeout_s)
    except httpx.HTTPError as e:
        return Check("completion", "endpoint", False, f"{_http_failure(e, timeout_s)}")
    took = time.monotonic() - began
    if reply.status_code != 200:
        hint = " (the stack's API key was refused)" if reply.status_code == 401 else ""
        return Check("completion", "endpoint", False, f"{_status(reply)}{hint}")
    try:
        tokens = int((reply.json().get("usage") or {}).get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        tokens = 0
    if tokens < 1:
        return Check("completion", "endpoint", False, "answered 200 without a token")
    return Check("completion", "endpoint", True, f"{tokens} token in {took:.2f} s")


def verification_check(view: StackView) -> Check | None:
    """Whether the last verification passed (``ready``); None when the stack has none."""
    if view.verification.get("enabled") is False:
        return None
    summary = verification_summary(view.verification)
    at = f" at {view.verified_at}" if view.verified_at else ""
    if view.ready:
        return Check("verification", "stack", True, f"passed{at}: {summary}")
    return Check("verification", "stack", False, f"did not pass{at}: {summary}")


def verification_summary(verification: Mapping[str, Any]) -> str:
    """``7 of 7 checks passed`` / ``1 of 7 checks failed: c4/output_throughput 3.2
    (expected >= 5)`` / ``no verification``, from the stack's ``verification`` output."""
    if verification.get("enabled") is False:
        return "no verification (verification.enabled is false)"
    rows = [r for r in verification.get("verdict") or [] if r.get("passed") is not None]
    failed = [r for r in rows if r.get("passed") is False]
    if not rows:
        return "no verdict recorded"
    if not failed:
        return f"{len(rows)} of {len(rows)} checks passed"
    what = ", ".join(
        f"{r.get('scope')}/{r.get('metric')} {r.get('observed')} (expected {r.get('expected')})"
        for r in failed
    )
    return f"{len(failed)} of {len(rows)} checks failed: {what}"


# ------------------------------------------------------------------ printing


def render_report(report: StatusReport) -> str:
    """The report as text: the verdict line, the endpoint, the last verification and a
    table of the checks."""
    view = report.view
    verified = view.verified_at or "unknown (verified before amdfleet recorded the time)"
    failed = sum(1 for c in report.checks if not c.ok)
    headline = {
        "serving": "every check passed",
        "degraded": f"tokens come back, but {failed} of {len(report.checks)} checks failed",
        "down": "no completion token came back",
    }[report.verdict]
    lines = [
        f"stack {view.stack}: {report.verdict}, {headline} (checked in {report.seconds:.1f} s)",
        f"  endpoint: {view.endpoint}  model: {view.model}",
        f"  last verification: {verified}, ready {str(view.ready).lower()}: "
        f"{verification_summary(view.verification)}",
    ]
    rows = [(c.name, c.subject, "ok" if c.ok else "FAILED", c.detail) for c in report.checks]
    lines += ["", table(("check", "subject", "result", "detail"), rows)]
    return "\n".join(lines)


# ------------------------------------------------------------------ helpers


def _outcome_check(key: str, outcome: Check | Exception) -> Check:
    """A call's check, or the failed check its error stands for (an unreachable host)."""
    if isinstance(outcome, Check):
        return outcome
    name, _, subject = key.partition(":")
    lines = [line.strip() for line in str(outcome).strip().splitlines() if line.strip()]
    text = " / ".join(lines[:_DETAIL_LINES]) or type(outcome).__name__
    return Check(name, subject or "endpoint", False, f"cannot check: {text}")


def _masked(check: Check, redact: Callable[[str], str]) -> Check:
    return Check(check.name, check.subject, check.ok, redact(check.detail))


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _status(reply: Any) -> str:
    text = " ".join(str(reply.text).split())[:200]
    return f"HTTP {reply.status_code}" + (f": {text}" if text else "")


def _http_failure(error: Exception, timeout_s: float) -> str:
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    return f"no answer ({type(error).__name__}: {error})"


COMMANDS = [status_command]
