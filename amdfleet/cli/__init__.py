"""The ``amdfleet`` command: the pure parts of a deployment, without Pulumi.

``plan`` and ``render`` resolve a stack into launch scripts; ``bench``, ``eval`` and
``verify`` measure any OpenAI-compatible endpoint. Project errors become
``ClickException``s here, in one place, so every command fails with the error's own
message and exit code 1 (2 for usage errors, as click does).

Commands are loaded lazily: only the invoked command's module is imported, so
``amdfleet plan`` does not pay for the benchmark client (httpx, numpy) it never uses.
``--help`` lists every command from :data:`COMMANDS` without importing any of them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

import click

from amdfleet.errors import AmdFleetError
from amdfleet.interrupts import deliver_interrupts


class CommandEntry(NamedTuple):
    """Where a command lives and the first sentence of its docstring (its short help)."""

    module: str
    summary: str


COMMANDS: dict[str, CommandEntry] = {
    "stacks": CommandEntry("amdfleet.cli.stack", "List the stacks in stacks/ with what each runs."),
    "plan": CommandEntry(
        "amdfleet.cli.stack",
        "Validate STACK and print its resolved plan: hosts, ranks, per-GPU memory budget, "
        "image and command lines.",
    ),
    "render": CommandEntry(
        "amdfleet.cli.stack",
        "Write every launch script, env file, systemd unit (process runtime) and Dockerfile of "
        "STACK into --out, with a manifest of content hashes.",
    ),
    "bench": CommandEntry(
        "amdfleet.cli.verify", "Benchmark serving at URL the way `vllm bench serve` does."
    ),
    "eval": CommandEntry(
        "amdfleet.cli.verify",
        "Score GSM8K (5-shot) at URL as lm-evaluation-harness's gsm8k task does.",
    ),
    "campaign": CommandEntry(
        "amdfleet.cli.campaign",
        "Run a matrix of stacks through the same sweeps, journaled, resumable and torn down.",
    ),
    "cloud": CommandEntry(
        "amdfleet.cli.cloud", "Find instances amdfleet rented that no stack owns any more."
    ),
    "reap": CommandEntry(
        "amdfleet.cli.reap",
        "Destroy (or warn about) every stack whose campaign.expires_at has passed, per its "
        "on_expiry.",
    ),
    "new": CommandEntry(
        "amdfleet.cli.new",
        "Scaffold a Pulumi project in DIRECTORY (new, empty, or holding only this virtualenv) "
        "that deploys an amdfleet stack with this installed amdfleet.",
    ),
    "parity": CommandEntry(
        "amdfleet.cli.verify",
        "Output parity: record a reference from a known-good endpoint, or check one.",
    ),
    "schema": CommandEntry(
        "amdfleet.cli.schema",
        "Print the JSON Schema (draft 2020-12) of a stack file, Pulumi.<stack>.yaml, for editors.",
    ),
    "status": CommandEntry(
        "amdfleet.cli.status",
        "Check STACK's deployed endpoint live: the engine on every node, the model, one token.",
    ),
    "verify": CommandEntry(
        "amdfleet.cli.verify",
        "Run STACK's verification spec against --url; exit 0 only if it passes.",
    ),
}
"""Every command: name → module (whose ``COMMANDS`` list holds it) and short help.
A unit test checks each summary against the command's real docstring."""


class _Group(click.Group):
    """A click group that imports a command's module only when that command runs, and
    turns :class:`AmdFleetError` into a clean message."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry.module)
        commands: list[click.Command] = module.COMMANDS
        return next(c for c in commands if c.name == cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Stand-ins carrying only the summary: click shortens them exactly as it
        # shortens the real docstrings, without importing the commands' modules.
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
    # Started in the background by a script, the Pulumi commands it runs would each wait
    # out their plugins' shutdown (amdfleet.interrupts).
    deliver_interrupts()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
