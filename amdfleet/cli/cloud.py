"""``amdfleet cloud``: what amdfleet has rented, seen from the clouds' APIs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from amdfleet.errors import CloudAPIError
from amdfleet.tables import table

if TYPE_CHECKING:
    from amdfleet.clouds.orphans import Orphan

TOKEN_ENV = {
    "digitalocean": "DIGITALOCEAN_TOKEN",
    "vultr": "VULTR_API_KEY",
    "hotaisle": "HOTAISLE_API_TOKEN",
}


@click.group("cloud")
def cloud_group() -> None:
    """Find instances amdfleet rented that no stack owns any more."""


NO_ORPHANS = 0
ORPHANS_REMAIN = 1
STATES_UNREADABLE = 2
CLOUD_FAILED = 3
"""``amdfleet cloud orphans`` exit statuses (2 is also click's status for bad usage)."""


@cloud_group.command("orphans")
@click.option(
    "--provider", type=click.Choice(sorted(TOKEN_ENV)), required=True, help="The cloud to ask."
)
@click.option(
    "--token-env",
    metavar="NAME",
    help="Environment variable holding the API token (default: DIGITALOCEAN_TOKEN, "
    "VULTR_API_KEY or HOTAISLE_API_TOKEN). The token is never printed.",
)
@click.option("--api-url", help="The provider API's base URL (default: its public endpoint).")
@click.option("--team", help="Hot Aisle team handle.")
@click.option(
    "--project", default="amdfleet", show_default=True, help="Pulumi project whose tag to look for."
)
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory of Pulumi.yaml: every stack there (in the backend the pulumi CLI is "
    "logged in to) is asked which instances it owns. Default: the current directory when "
    "it holds a Pulumi.yaml; without one, only the --state files count.",
)
@click.option(
    "--state",
    "state_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="An exported state (`pulumi stack export --file FILE`) whose instances count as "
    "owned; repeatable. Enough on its own (no Pulumi project or CLI needed): then give the "
    "state of every stack of the project.",
)
@click.option("--delete", is_flag=True, help="Delete the orphans and wait until they are gone.")
@click.option("--json", "as_json", is_flag=True, help="Print the orphans as JSON.")
@click.option(
    "--timeout", "timeout_s", default=900.0, show_default=True, help="Seconds to wait for deletes."
)
def orphans_command(
    provider: str,
    token_env: str | None,
    api_url: str | None,
    team: str | None,
    project: str,
    project_dir: Path | None,
    state_files: tuple[Path, ...],
    delete: bool,
    as_json: bool,
    timeout_s: float,
) -> None:
    """List instances tagged for the project that no stack's state owns; --delete removes
    them.

    Ownership comes from every stack of the project (`pulumi stack ls` and `pulumi stack
    export`, run in --project-dir, or in the current directory when it holds a
    Pulumi.yaml) plus any --state files. If any state cannot be read,
    nothing is called an orphan and nothing is deleted. A price the catalog and the cloud
    do not give is shown as unknown, never counted as $0. On Hot Aisle, VMs of the team
    without amdfleet's mark are listed apart and never deleted.

    Exit status: 0 no orphans (or all deleted), 1 orphans remain, 2 a state could not be
    read (or bad usage), 3 the cloud's API failed.
    """
    from amdfleet.clouds.orphans import OwnershipError

    env = token_env or TOKEN_ENV[provider]
    token = os.environ.get(env)
    if not token:
        raise click.UsageError(
            f"set {env} to the {provider} API token (or name another with --token-env)"
        )
    try:
        owned = _owned(project_dir, state_files)
    except OwnershipError as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(STATES_UNREADABLE) from e
    try:
        status = _report(provider, token, api_url, team, project, owned, as_json, delete, timeout_s)
    except CloudAPIError as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(CLOUD_FAILED) from e
    raise SystemExit(status)


def _owned(project_dir: Path | None, state_files: tuple[Path, ...]) -> set[str]:
    """The instance ids every state owns; OwnershipError when any cannot be read."""
    from amdfleet.clouds.orphans import OwnershipError, owned_ids, stack_states, state_file

    if project_dir is None and (Path("Pulumi.yaml").is_file() or not state_files):
        project_dir = Path(".")
    if project_dir is not None and not (project_dir / "Pulumi.yaml").is_file():
        raise OwnershipError(
            f"no Pulumi.yaml in {project_dir}, so its stacks cannot be asked\n  hint: "
            "run from the project directory, pass --project-dir, or pass every stack's "
            "state with --state (`pulumi stack export --file FILE`)"
        )
    states = stack_states(project_dir) if project_dir is not None else []
    states += [state_file(path) for path in state_files]
    where = f"{len(states) - len(state_files)} stack(s) of {project_dir}" if project_dir else ""
    files = f"{len(state_files)} --state file(s)" if state_files else ""
    click.echo(f"ownership from {' and '.join(w for w in (where, files) if w)}", err=True)
    return owned_ids(states)


def _report(
    provider: str,
    token: str,
    api_url: str | None,
    team: str | None,
    project: str,
    owned: set[str],
    as_json: bool,
    delete: bool,
    timeout_s: float,
) -> int:
    """List (and with ``delete`` remove) the orphans; the exit status."""
    from amdfleet.clouds import client_for
    from amdfleet.clouds.orphans import delete_orphans, find_orphans, unmarked

    with client_for(provider, token, api_url=api_url, team=team) as client:
        orphans = find_orphans(client, project, owned, provider)
        strays = unmarked(client)
        rows = [
            (
                o.instance.id,
                o.instance.name,
                o.stack or "?",
                o.node or "?",
                o.instance.region,
                o.instance.size,
                o.instance.created_at or "?",
                "unknown" if o.price_hourly_usd is None else f"${o.price_hourly_usd:,.2f}",
            )
            for o in orphans
        ]
        if as_json:
            listed = [
                {**dict(zip(_HEADERS, row, strict=True)), "price_hourly_usd": o.price_hourly_usd}
                for row, o in zip(rows, orphans, strict=True)
            ]
            click.echo(json.dumps(listed, indent=2))
        elif not orphans:
            click.echo(
                f"no orphans: every {provider} instance tagged for {project} is owned by a stack"
            )
        else:
            click.echo(table(_HEADERS, rows))
            click.echo(_total(orphans))
        for stray in strays:
            click.echo(
                f"note: {provider} VM {stray.id} ({stray.size}, {stray.status}) carries no "
                "amdfleet mark: a create whose answer was lost may have left it, or it was "
                "rented by hand; not deleted",
                err=True,
            )
        if not orphans:
            return NO_ORPHANS
        if not delete:
            return ORPHANS_REMAIN
        left = delete_orphans(client, orphans, timeout_s=timeout_s)
    if left:
        click.echo(
            f"Error: still listed after {timeout_s:.0f} s: {', '.join(left)}; run again, or "
            f"delete them in the {provider} console",
            err=True,
        )
        return ORPHANS_REMAIN
    click.echo(f"deleted {len(orphans)} orphan(s)")
    return NO_ORPHANS


def _total(orphans: list[Orphan]) -> str:
    from amdfleet.clouds.orphans import hourly_total

    hourly, unknown = hourly_total(orphans)
    if not unknown:
        return f"{len(orphans)} orphan(s), ${hourly:,.2f}/hour"
    priced = len(orphans) - unknown
    return (
        f"{len(orphans)} orphan(s): ${hourly:,.2f}/hour for {priced}, {unknown} at an "
        "unknown price (not counted)"
    )


_HEADERS = ("id", "name", "stack", "node", "region", "size", "created", "per hour")

COMMANDS = [cloud_group]
