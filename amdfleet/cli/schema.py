"""``amdfleet schema``: the JSON Schema of a stack file, for editors; with ``--package``,
the Pulumi package schema of amdfleet's resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from amdfleet.config.json_schema import schema_text, stack_file_schema


@click.command("schema")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to this file (its directory must exist) instead of printing it.",
)
@click.option(
    "--package",
    is_flag=True,
    help="The Pulumi package schema of amdfleet's resources instead (what the plugin "
    "pulumi-resource-amdfleet serves; committed as schema/amdfleet.schema.json).",
)
def schema_command(out_file: Path | None, package: bool) -> None:
    """Print the JSON Schema (draft 2020-12) of a stack file, Pulumi.<stack>.yaml, for
    editors. It is generated from the stack models (descriptions, enums, defaults;
    unknown keys are errors). The committed copy is schema/stack.schema.json, which every
    stack in stacks/ names in its first line (`# yaml-language-server: $schema=...`), so
    VS Code's YAML extension, or any editor using yaml-language-server, checks and
    completes stack files as you type.

    With --package it prints the Pulumi package schema of amdfleet instead: every resource
    type (amdfleet:index:SshHost, ...) with its inputs, outputs, secrets and types,
    generated from the providers' props models; `pulumi package get-schema` shows the
    same, and `pulumi package gen-sdk` reads it."""
    text = schema_text(_package_schema() if package else stack_file_schema())
    if out_file is None:
        click.echo(text, nl=False)
        return
    try:
        out_file.write_text(text)
    except OSError as e:
        raise click.ClickException(
            f"cannot write --out {out_file}: {e.strerror} — give a file in an existing directory"
        ) from e
    click.echo(f"wrote {out_file}", err=True)


def _package_schema() -> dict[str, Any]:
    from amdfleet.plugin.provider import version
    from amdfleet.plugin.schema import package_schema

    return package_schema(version())


COMMANDS: list[click.Command] = [schema_command]
