"""``amdfleet reap``: enforce the campaign TTL of every stack of the project."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from amdfleet.tables import table


@click.command("reap")
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory of Pulumi.yaml: every stack of that project in the backend the Pulumi "
    "CLI is logged in to (PULUMI_BACKEND_URL or `pulumi login`) is looked at.",
)
@click.option("--dry-run", is_flag=True, help="Decide and print, destroy nothing.")
@click.option(
    "--strict", is_flag=True, help="Exit 1 also when an expired stack is only warned about."
)
@click.option(
    "--now",
    "now_text",
    metavar="ISO8601",
    help="Decide as if it were this time (e.g. 2026-11-28T18:00:00+00:00; no offset means "
    "UTC) instead of the clock: for tests and 'what would happen at...'.",
)
def reap_command(project_dir: Path, dry_run: bool, strict: bool, now_text: str | None) -> None:
    """Destroy (or warn about) every stack whose campaign.expires_at has passed, per its
    on_expiry.

    Stacks without an amdfleet `campaign` output are never touched. `on_expiry: destroy`
    runs `pulumi destroy` and checks that no resource is left; the stack itself (config,
    history) is kept, never `pulumi stack rm`-ed, so a second run skips it. `on_expiry:
    warn` prints a warning and leaves the stack up. Safe from cron or a systemd timer: a
    lock in <project-dir>/.amdfleet/reap.lock makes a run that overlaps another one exit
    0 without doing anything. Exit status 1 if a destroy failed (or, with --strict, if an
    expired stack was only warned about), or if the project's stacks could not be listed
    (the backend unreachable or refusing the login; its password is never printed).
    """
    from amdfleet.campaign.reap import ReapLocked, reap

    now = _parse_now(now_text) if now_text else datetime.now(UTC)
    try:
        decisions = reap(
            project_dir=project_dir.resolve(),
            now=now,
            dry_run=dry_run,
            on_event=lambda line: click.echo(line, err=True),
        )
    except ReapLocked as e:
        click.echo(str(e))
        return
    stamp = now.isoformat(timespec="seconds")
    if not decisions:
        click.echo(f"{stamp}: no stacks in this project's backend; nothing to do")
        return
    rows = [(d.stack, d.expires_at or "-", d.on_expiry or "-", d.decision) for d in decisions]
    click.echo(f"amdfleet reap at {stamp}{' (dry run)' if dry_run else ''}")
    click.echo(table(("stack", "expires_at", "on_expiry", "decision"), rows))
    for d in decisions:
        if d.action in ("warn", "invalid"):
            click.echo(
                f"warning: stack {d.stack} (expires_at {d.expires_at}): {d.decision}", err=True
            )
        if d.failed:
            click.echo(f"error: stack {d.stack}: {d.decision}", err=True)
            for line in d.output_tail.splitlines():
                click.echo(f"  | {line}", err=True)
    acted = [d for d in decisions if d.action in ("destroyed", "would-destroy", "failed")]
    if not acted:
        click.echo("nothing to destroy")
    if any(d.failed for d in decisions):
        raise SystemExit(1)
    if strict and any(d.action in ("warn", "invalid") for d in decisions):
        raise SystemExit(1)


def _parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-28T18:00:00+00:00)",
            param_hint="--now",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


COMMANDS = [reap_command]
