"""``amdfleet new``: a Pulumi project of the user's own, outside this repository.

The files are read back the way Pulumi and amdfleet read them (YAML, the stack loader);
the installation is a directory standing in for a virtualenv whose ``bin`` holds the
plugin's console script (the real one is exercised by
``tests/program/test_user_project.py``, from the wheel).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from click.testing import CliRunner

from amdfleet.cli import main as cli
from amdfleet.config import STACKS_DIR, load_stack_file
from amdfleet.errors import AmdFleetError, ConfigError
from amdfleet.scaffold import (
    MAIN_PY,
    PLUGIN,
    SCHEMA_FILE,
    Installation,
    new_project,
    stack_file,
)


@pytest.fixture
def installation(tmp_path: Path) -> Installation:
    scripts = tmp_path / "venv" / "bin"
    scripts.mkdir(parents=True)
    (scripts / PLUGIN).write_text("#!/bin/sh\n")
    return Installation(version="1.2.3", scripts=scripts, virtualenv=tmp_path / "venv")


def test_the_project_runs_the_installed_amdfleet_and_its_plugin(
    tmp_path: Path, installation: Installation
) -> None:
    directory = tmp_path / "my-llm"
    written = new_project(directory, installation=installation)
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in directory.iterdir())
    assert names == [
        "Pulumi.local.yaml",
        "Pulumi.yaml",
        "README.md",
        "__main__.py",
        "requirements.txt",
    ]
    project = yaml.safe_load((directory / "Pulumi.yaml").read_text())
    assert project["name"] == "my-llm"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": str(tmp_path / "venv")},
    }
    assert project["plugins"] == {
        "providers": [{"name": "amdfleet", "path": str(installation.scripts)}]
    }
    assert "stackConfigDir" not in project and "main" not in project  # the stack beside it
    assert (directory / "__main__.py").read_text() == MAIN_PY
    assert "from amdfleet.program import main\n\nmain()\n" in MAIN_PY
    assert (directory / "requirements.txt").read_text() == "amdfleet==1.2.3\n"


def test_the_stack_file_is_the_committed_one_with_the_installed_schema(
    tmp_path: Path, installation: Installation
) -> None:
    directory = tmp_path / "p"
    new_project(directory, installation=installation)
    text = (directory / "Pulumi.local.yaml").read_text()
    first, rest = text.split("\n", 1)
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    schema = Path(urlparse(first.removeprefix(prefix)).path)
    assert schema == SCHEMA_FILE and schema.is_file()
    committed = (STACKS_DIR / "Pulumi.local.yaml").read_text()
    assert committed.split("\n", 1)[1] == rest  # the rest byte for byte
    assert load_stack_file(str(directory / "Pulumi.local.yaml")) == load_stack_file(
        "local"
    ).model_copy(update={"source": str(directory / "Pulumi.local.yaml")})


def test_a_virtualenv_inside_the_project_is_named_relative_to_it(tmp_path: Path) -> None:
    """The directory may already hold the virtualenv amdfleet runs from (and only that)."""
    directory = tmp_path / "p"
    scripts = directory / ".venv" / "bin"
    scripts.mkdir(parents=True)
    (scripts / PLUGIN).write_text("#!/bin/sh\n")
    new_project(directory, installation=Installation("1", scripts, directory / ".venv"))
    project = yaml.safe_load((directory / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    assert project["plugins"]["providers"][0]["path"] == ".venv/bin"


@pytest.mark.parametrize(
    ("stack", "secrets"),
    [
        ("local", ["apiKey"]),
        ("do-mi300x-llama70b", ["apiKey", "doToken"]),
        ("mi355x-llama70b", ["apiKey", "registryPassword"]),
    ],
)
def test_the_readme_sets_each_secret_the_stack_references(
    tmp_path: Path, installation: Installation, stack: str, secrets: list[str]
) -> None:
    directory = tmp_path / "p"
    new_project(directory, stack=stack, installation=installation)
    readme = (directory / "README.md").read_text()
    assert load_stack_file(stack).spec.secret_keys == tuple(secrets)
    set_lines = [line for line in readme.splitlines() if "config set --secret" in line]
    # in amdfleet's namespace: in a project not named amdfleet, a bare key is the project's
    assert [line.split("--secret ")[1] for line in set_lines] == [
        f"amdfleet:{key} -s {stack}" for key in secrets
    ]
    assert f"openssl rand -hex 24 | pulumi config set --secret amdfleet:apiKey -s {stack}" in readme
    for command in (
        f"pulumi stack init {stack}",
        f"pulumi up -s {stack}",
        f"pulumi destroy -s {stack}",
    ):
        assert command in readme
    assert str(installation.virtualenv) in readme


def test_a_non_empty_directory_is_refused_and_left_alone(
    tmp_path: Path, installation: Installation
) -> None:
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    with pytest.raises(AmdFleetError, match=r"is not empty \(1 entries: notes.txt\)"):
        new_project(directory, installation=installation)
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(AmdFleetError, match="is a file"):
        new_project(afile, installation=installation)


def test_bad_names_stacks_and_installations_are_refused_before_writing(
    tmp_path: Path, installation: Installation
) -> None:
    with pytest.raises(AmdFleetError, match=r"--name 'my llm' is not a Pulumi project name"):
        new_project(tmp_path / "a", name="my llm", installation=installation)
    with pytest.raises(AmdFleetError, match=r"DIR's name.*'b c'.*pass --name NAME"):
        new_project(tmp_path / "b c", installation=installation)
    with pytest.raises(ConfigError, match=r"no stack file.*known stacks: .*local"):
        new_project(tmp_path / "d", stack="nope", installation=installation)
    bare = Installation("1", tmp_path / "empty-bin", None)
    with pytest.raises(AmdFleetError, match=f"{PLUGIN} is not in {tmp_path / 'empty-bin'}"):
        new_project(tmp_path / "e", installation=bare)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["venv"]  # nothing written


def test_what_pulumi_encrypted_in_a_checkouts_stack_stays_behind(tmp_path: Path) -> None:
    committed = (STACKS_DIR / "Pulumi.local.yaml").read_text()
    used = (
        "encryptionsalt: v1:c2FsdA==:v1:abc:def\n"
        + committed
        + "  amdfleet:apiKey:\n    secure: v1:SECRETCIPHERTEXT\n"
    )
    source = STACKS_DIR / "Pulumi.local.yaml"
    text = stack_file(used, tmp_path, source)
    assert "SECRETCIPHERTEXT" not in text and "encryptionsalt" not in text
    assert text.split("\n", 1)[1] == committed.split("\n", 1)[1]
    odd = committed + "  amdfleet:apiKey: {secure: v1:SECRETCIPHERTEXT}\n"
    with pytest.raises(AmdFleetError, match="encrypted values") as caught:
        stack_file(odd, tmp_path, source)
    assert "SECRETCIPHERTEXT" not in str(caught.value)


def test_the_cli_writes_the_project_and_refuses_a_used_directory(tmp_path: Path) -> None:
    """Through the command, with this environment's real installation (scripts/setup put
    pulumi-resource-amdfleet in .venv/bin)."""
    runner = CliRunner()
    result = runner.invoke(cli, ["new", str(tmp_path / "p"), "--name", "demo"])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'p' / 'Pulumi.yaml'}" in result.output
    assert yaml.safe_load((tmp_path / "p" / "Pulumi.yaml").read_text())["name"] == "demo"
    again = runner.invoke(cli, ["new", str(tmp_path / "p")])
    assert again.exit_code == 1
    assert "is not empty (5 entries" in again.output and "give another DIR" in again.output


@pytest.mark.parametrize(
    ("project", "command"),
    [
        ("my-llm", "pulumi config set --secret amdfleet:apiKey -s local"),
        ("amdfleet", "pulumi config set --secret apiKey -s local"),  # this repository's
    ],
)
def test_a_missing_secret_names_the_key_the_project_must_set(project: str, command: str) -> None:
    """``pulumi up`` without the secret: the hint's command must set the key amdfleet reads
    (in a project not named amdfleet, a bare key would be the project's own)."""
    from amdfleet.config.loader import _config_set_hint

    hint = _config_set_hint(load_stack_file("local").spec, "apiKey", project)
    assert f"`{command}`" in hint
