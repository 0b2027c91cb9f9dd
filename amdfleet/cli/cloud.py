"""``amdfleet cloud``: what amdfleet has rented, seen from the clouds' APIs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from amdfleet.tables import table

TOKEN_ENV = {
    "digitalocean": "DIGITALOCEAN_TOKEN",
    "vultr": "VULTR_API_KEY",
    "hotaisle": "HOTAISLE_API_TOKEN",
}


@click.group("cloud")
def cloud_group() -> None:
    """Find instances amdfleet rented that no stack owns any more."""


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
    default=Path("."),
    show_default=True,
    help="Directory of Pulumi.yaml: every stack there (in the logged-in backend) is asked "
    "which instances it owns.",
)
@click.option(
    "--state",
    "state_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="An exported state (`pulumi stack export`) whose instances count as owned too; "
    "repeatable, for stacks in other backends.",
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
    project_dir: Path,
    state_files: tuple[Path, ...],
    delete: bool,
    as_json: bool,
    timeout_s: float,
) -> None:
    """List instances tagged for the project that no stack's state owns; --delete removes
    them.

    Ownership comes from every stack of the project (`pulumi stack ls` and `pulumi stack
    export`, run in --project-dir) plus any --state files; if a state cannot be read,
    nothing is listed or deleted. Exit status 1 when orphans remain.
    """
    from amdfleet.clouds import client_for
    from amdfleet.clouds.orphans import delete_orphans, find_orphans, owned_ids, stack_states

    env = token_env or TOKEN_ENV[provider]
    token = os.environ.get(env)
    if not token:
        raise click.UsageError(
            f"set {env} to the {provider} API token (or name another with --token-env)"
        )
    states = stack_states(project_dir)
    states += [json.loads(path.read_text()) for path in state_files]
    with client_for(provider, token, api_url=api_url, team=team) as client:
        orphans = find_orphans(client, project, owned_ids(states), provider)
        rows = [
            (
                o.instance.id,
                o.instance.name,
                o.stack or "?",
                o.node or "?",
                o.instance.region,
                o.instance.size,
                o.instance.created_at or "?",
                "?" if o.price_hourly_usd is None else f"${o.price_hourly_usd:,.2f}",
            )
            for o in orphans
        ]
        if as_json:
            click.echo(
                json.dumps([dict(zip(_HEADERS, row, strict=True)) for row in rows], indent=2)
            )
        elif not orphans:
            click.echo(
                f"no orphans: every {provider} instance tagged for {project} is owned by a stack"
            )
        else:
            click.echo(table(_HEADERS, rows))
            hourly = sum(o.price_hourly_usd or 0 for o in orphans)
            click.echo(f"{len(orphans)} orphan(s), ${hourly:,.2f}/hour")
        if not orphans:
            return
        if not delete:
            raise SystemExit(1)
        left = delete_orphans(client, orphans, timeout_s=timeout_s)
    if left:
        raise click.ClickException(
            f"still listed after {timeout_s:.0f} s: {', '.join(left)}; run again, or delete "
            f"them in the {provider} console"
        )
    click.echo(f"deleted {len(orphans)} orphan(s)")


_HEADERS = ("id", "name", "stack", "node", "region", "size", "created", "per hour")

COMMANDS = [cloud_group]
