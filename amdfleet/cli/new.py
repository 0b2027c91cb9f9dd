"""``amdfleet new``: a Pulumi project of your own that deploys an amdfleet stack."""

from __future__ import annotations

from pathlib import Path

import click

from amdfleet.scaffold import new_project


@click.command("new")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--stack",
    default="local",
    show_default=True,
    help="The committed stack to start from (a name `amdfleet stacks` lists, or a file).",
)
@click.option("--name", help="The Pulumi project's name (default: DIRECTORY's name).")
def new_command(directory: Path, stack: str, name: str | None) -> None:
    """Scaffold a Pulumi project in DIRECTORY (new, empty, or holding only this virtualenv)
    that deploys an amdfleet stack with this installed amdfleet. It writes Pulumi.yaml
    (runtime python with this virtualenv, and the plugin entry that makes the engine run
    this virtualenv's pulumi-resource-amdfleet), __main__.py, requirements.txt pinning this
    version, the stack file Pulumi.<stack>.yaml (copied from the committed stack, its
    schema modeline pointing at the installed schema) and a README: install, the secrets
    to set (as amdfleet:KEY), pulumi up and destroy."""
    written = new_project(directory, stack=stack, name=name)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: cd {directory} and follow README.md (secrets, then pulumi up)", err=True)


COMMANDS: list[click.Command] = [new_command]
