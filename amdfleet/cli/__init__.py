"""The ``amdfleet`` command: the pure parts of a deployment, without Pulumi.

``plan`` and ``render`` resolve a stack into launch scripts; ``bench``, ``eval`` and
``verify`` measure any OpenAI-compatible endpoint. Project errors become
``ClickException``s here, in one place, so every command fails with the error's own
message and exit code 1 (2 for usage errors, as click does).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from amdfleet.errors import AmdFleetError


class _Group(click.Group):
    """A click group that turns :class:`AmdFleetError` into a clean message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AmdFleetError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="amdfleet")
def main() -> None:
    """Declarative, verified LLM serving on AMD Instinct GPUs.

    STACK arguments are a stack name from stacks/ (e.g. mi355x-llama70b) or a path to a
    Pulumi.<stack>.yaml file.
    """


def _register(loader: Callable[[], list[click.Command]]) -> None:
    for command in loader():
        main.add_command(command)


def _stack_commands() -> list[click.Command]:
    from amdfleet.cli import stack

    return stack.COMMANDS


def _verify_commands() -> list[click.Command]:
    from amdfleet.cli import verify

    return verify.COMMANDS


_register(_stack_commands)
_register(_verify_commands)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
