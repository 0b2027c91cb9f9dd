"""``amdfleet schema``: the JSON Schema of a stack file, for editors."""

from __future__ import annotations

from pathlib import Path

import click

from amdfleet.config.json_schema import schema_text, stack_file_schema


@click.command("schema")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to this file (its directory must exist) instead of printing it.",
)
def schema_command(out_file: Path | None) -> None:
    """Print the JSON Schema (draft 2020-12) of a stack file, Pulumi.<stack>.yaml, for
    editors. It is generated from the stack models (descriptions, enums, defaults;
    unknown keys are errors). The committed copy is schema/stack.schema.json, which every
    stack in stacks/ names in its first line (`# yaml-language-server: $schema=...`), so
    VS Code's YAML extension, or any editor using yaml-language-server, checks and
    completes stack files as you type."""
    text = schema_text(stack_file_schema())
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


COMMANDS: list[click.Command] = [schema_command]
