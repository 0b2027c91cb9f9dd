"""TTL enforcement: act on every stack whose ``campaign.expires_at`` has passed.

:func:`reap` walks every stack of the Pulumi project in ``project_dir`` (in the backend
the CLI is logged in to, through the Automation API and the real CLI underneath) and
decides per stack from its ``campaign`` output (``amdfleet.components.campaign_output``):

- no amdfleet ``campaign`` output → never touched;
- no ``expires_at`` → nothing to do; ``expires_at`` in the future → nothing to do yet;
- expired with ``on_expiry: warn`` → a warning (the stack is left as it is);
- expired with ``on_expiry: destroy`` → ``pulumi destroy`` (not with ``dry_run``), then
  a check that the stack holds no resource any more.

Only the stack's resources are destroyed: the stack itself (its config, history and
name) is kept, never ``pulumi stack rm``-ed, so a destroyed stack reads as "nothing
deployed" on the next run and is skipped (running twice does nothing the second time).
One destroy failing does not stop the others. An exclusive ``flock`` on
``<project_dir>/.amdfleet/reap.lock`` keeps two runs (two cron ticks) from acting on the
same stacks at once: the second raises :class:`ReapLocked`. What the Pulumi CLI said is
reported with the backend's credentials masked (:func:`amdfleet.pulumi_backend.mask_backend`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from amdfleet.errors import AmdFleetError
from amdfleet.pulumi_backend import mask_backend

if TYPE_CHECKING:
    from pulumi.automation import LocalWorkspace

Action = Literal[
    "skip", "no-expiry", "ok", "warn", "would-destroy", "destroyed", "failed", "invalid"
]
LOCK_FILE = Path(".amdfleet") / "reap.lock"
OUTPUT_TAIL_LINES = 15


class ReapLocked(AmdFleetError):
    """Another reap holds the project's lock; this one did nothing."""

    def __init__(self, lock: Path) -> None:
        self.lock = lock
        super().__init__(f"another amdfleet reap is running (it holds {lock}); nothing done")


class ReapBackendError(AmdFleetError):
    """The project's stacks could not be listed (the backend unreachable or refusing the
    login, a wrong --project-dir); nothing was decided."""


@dataclass(frozen=True)
class ReapDecision:
    """What reap decided (and did) for one stack."""

    stack: str
    action: Action
    decision: str
    """One line for the table: ``ok, expires in 3h12m``, ``destroyed (stack kept)``..."""
    expires_at: str | None = None
    on_expiry: str | None = None
    owner: str | None = None
    output_tail: str = ""
    """The last lines a failed destroy printed."""

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def reap(
    *,
    project_dir: Path,
    now: datetime,
    dry_run: bool,
    env: Mapping[str, str] | None = None,
    on_event: Callable[[str], None] = lambda message: None,
) -> list[ReapDecision]:
    """Decide, and act per ``on_expiry``, for every stack of the project in
    ``project_dir``, at time ``now`` (naive means UTC).

    ``env`` is added to this process's environment for the Pulumi CLI (backend URL,
    passphrase). ``on_event`` receives a line before and after each destroy. Raises
    :class:`ReapLocked` when another reap holds the lock; a stack that cannot be read
    or destroyed is reported in its decision (``failed``), never raised; raises
    :class:`ReapBackendError` when the project's stacks cannot be listed.
    """
    from pulumi import automation as auto

    now = _aware(now)
    cli_env = {**os.environ, **(env or {})}
    with _lock(project_dir / LOCK_FILE):
        workspace = auto.LocalWorkspace(work_dir=str(project_dir), env_vars=dict(env or {}))
        try:
            summaries = workspace.list_stacks()
        except auto.CommandError as e:
            raise _listing_failed(project_dir, str(e), cli_env) from None
        decisions = [
            _reap_stack(workspace, summary.name, now, dry_run, on_event)
            for summary in sorted(summaries, key=lambda s: s.name)
        ]
    return [replace(d, output_tail=mask_backend(d.output_tail, cli_env)) for d in decisions]


def format_age(seconds: float) -> str:
    """``3h12m``, ``2d4h``, ``45m``, ``<1m``: a coarse, readable duration."""
    minutes = int(abs(seconds) // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else "<1m"


def _reap_stack(
    workspace: LocalWorkspace,
    name: str,
    now: datetime,
    dry_run: bool,
    on_event: Callable[[str], None],
) -> ReapDecision:
    from pulumi import automation as auto

    try:
        outputs = {k: v.value for k, v in workspace.stack_outputs(name).items()}
        if not outputs and not _resources(workspace, name):
            return ReapDecision(name, "skip", "skip: nothing deployed (already destroyed)")
    except auto.CommandError as e:
        return ReapDecision(
            name, "failed", "failed: could not read its outputs", output_tail=_tail(str(e))
        )
    campaign = outputs.get("campaign")
    if not _is_campaign(campaign):
        if "ready" in outputs and campaign is None:
            return ReapDecision(
                name, "no-expiry", "no expiry (an amdfleet stack without a campaign output)"
            )
        return ReapDecision(name, "skip", "skip: no amdfleet campaign output")
    assert isinstance(campaign, dict)
    expires_at, on_expiry = campaign.get("expires_at"), str(campaign["on_expiry"])
    owner = campaign.get("owner") or None

    def decided(action: Action, text: str, tail: str = "") -> ReapDecision:
        return ReapDecision(name, action, text, expires_at, on_expiry, owner, tail)

    if expires_at is None:
        return decided("no-expiry", "no expiry")
    try:
        expiry = _aware(datetime.fromisoformat(str(expires_at)))
    except ValueError:
        return decided(
            "invalid", f"skip: campaign.expires_at {expires_at!r} is not an ISO 8601 time"
        )
    left = (expiry - now).total_seconds()
    if left > 0:
        return decided("ok", f"ok, expires in {format_age(left)}")
    since = f"expired {format_age(left)} ago"
    if on_expiry != "destroy":
        who = f" (owner {owner})" if owner else ""
        return decided("warn", f"warn: {since}{who}; left running")
    if dry_run:
        return decided("would-destroy", f"would destroy: {since} (dry run)")
    on_event(f"{name}: {since}, destroying its resources (the stack itself is kept)")
    return _destroy(workspace, name, decided, since, on_event)


def _destroy(
    workspace: LocalWorkspace,
    name: str,
    decided: Callable[[Action, str, str], ReapDecision],
    since: str,
    on_event: Callable[[str], None],
) -> ReapDecision:
    from pulumi import automation as auto

    lines: list[str] = []
    try:
        stack = auto.Stack.select(name, workspace)
        stack.destroy(on_output=lines.append, show_secrets=False, color="never")
    except auto.CommandError as e:
        on_event(f"{name}: destroy failed")
        return decided(
            "failed", f"failed: destroy failed ({since})", _tail("\n".join(lines) or str(e))
        )
    left = _resources(workspace, name)
    if left:
        on_event(f"{name}: destroy finished but {len(left)} resource(s) remain")
        return decided(
            "failed", f"failed: {len(left)} resource(s) left after destroy", _tail("\n".join(left))
        )
    on_event(f"{name}: destroyed, no resources left; stack kept")
    return decided("destroyed", f"destroyed ({since}); stack kept, no resources left", "")


def _listing_failed(project_dir: Path, error: str, env: Mapping[str, str]) -> ReapBackendError:
    said = error.partition("stderr:")[2] or error  # the CLI's own words, not the wrapper's
    lines = "\n".join(f"  | {line.strip()}" for line in _tail(mask_backend(said, env)).splitlines())
    return ReapBackendError(
        f"cannot list the stacks of the project in {project_dir}:\n{lines}\n"
        "  hint: check the backend (PULUMI_BACKEND_URL or `pulumi login`), that it is "
        "reachable and accepts the login, and --project-dir"
    )


def _resources(workspace: LocalWorkspace, name: str) -> list[str]:
    """The URNs of the resources in the stack's state."""
    deployment = workspace.export_stack(name).deployment or {}
    return [str(r.get("urn")) for r in deployment.get("resources") or []]


def _is_campaign(value: object) -> bool:
    """An amdfleet ``campaign`` output: a dict naming at least its ``on_expiry``."""
    return isinstance(value, dict) and value.get("on_expiry") in ("warn", "destroy")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _tail(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReapLocked(path) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
