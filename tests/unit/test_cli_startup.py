"""What ``amdfleet`` imports: each command's module only when it runs, and no heavy
library for ``amdfleet plan``. Checked on the modules a fresh interpreter really loaded,
not on timings (benchmarks/cli_startup.py measures those)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import amdfleet.verify
from amdfleet.cli import COMMANDS, main

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pulumi", "matplotlib", "numpy", "tokenizers", "paramiko", "httpx", "jinja2", "grpc")

# Runs one command in this interpreter, then writes every loaded module's name.
_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from amdfleet.cli import main
try:
    main(sys.argv[3:], prog_name="amdfleet")
except SystemExit as e:
    code = e.code
with open(sys.argv[2], "w") as f:
    json.dump({"exit": code, "modules": sorted(sys.modules)}, f)
"""


def loaded_modules(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    record = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(REPO_ROOT), str(record), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    data = json.loads(record.read_text())
    assert data["exit"] in (0, None), result.stderr
    return {m.partition(".")[0] for m in data["modules"]} | set(data["modules"]), result.stdout


def test_plan_imports_no_heavy_library(tmp_path: Path) -> None:
    modules, out = loaded_modules(tmp_path, "plan", "mi355x-llama70b")
    assert "memory per GPU (GiB)" in out
    assert {"amdfleet.cli.stack", "amdfleet.plan", "pydantic"} <= modules
    assert sorted(modules & set(HEAVY)) == []
    assert "amdfleet.cli.verify" not in modules
    # the parity reference's reader only (json, hashlib): no HTTP client, no benchmark
    verify = {m for m in modules if m.startswith("amdfleet.verify")}
    assert verify <= {"amdfleet.verify", "amdfleet.verify.reference"}, verify


def test_the_probe_sees_what_a_command_imports(tmp_path: Path) -> None:
    # The same probe on `render` sees jinja2, so an empty set above is a real finding.
    modules, _ = loaded_modules(tmp_path, "render", "mi355x-llama70b", "--out", str(tmp_path))
    assert "jinja2" in modules
    assert "amdfleet.cli.verify" not in modules


def test_help_lists_every_command_without_importing_it(tmp_path: Path) -> None:
    modules, out = loaded_modules(tmp_path, "--help")
    for name in COMMANDS:
        assert f"  {name} " in out
    assert not modules & {"amdfleet.cli.stack", "amdfleet.cli.verify", "pydantic"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_table_summary_is_the_commands_own_short_help(name: str) -> None:
    entry = COMMANDS[name]
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
    assert command in importlib.import_module(entry.module).COMMANDS
    unlimited = 10_000
    assert click.Command(name, help=entry.summary).get_short_help_str(unlimited) == (
        command.get_short_help_str(unlimited)
    )
    assert entry.summary.split()[:3] == (command.help or "").split()[:3]


def test_table_holds_every_command_of_each_module() -> None:
    for module in {entry.module for entry in COMMANDS.values()}:
        names = {c.name for c in importlib.import_module(module).COMMANDS}
        assert names == {n for n, e in COMMANDS.items() if e.module == module}


def test_help_is_what_an_eager_group_prints() -> None:
    eager = click.Group(
        "amdfleet",
        help=main.help,
        params=main.params,
        context_settings=main.context_settings,
        commands=[main.get_command(click.Context(main), n) for n in COMMANDS],
    )
    lazy = CliRunner().invoke(main, ["--help"], prog_name="amdfleet", terminal_width=80)
    expected = CliRunner().invoke(eager, ["--help"], prog_name="amdfleet", terminal_width=80)
    assert lazy.exit_code == 0
    assert lazy.output == expected.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["plam"])
    assert result.exit_code == 2
    assert "No such command 'plam'" in result.output


@pytest.mark.parametrize("name", amdfleet.verify.__all__)
def test_verify_package_exports_resolve(name: str) -> None:
    value = getattr(amdfleet.verify, name)
    assert value.__name__ == name
