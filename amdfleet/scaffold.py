"""A Pulumi project of the user's own that deploys one amdfleet stack (``amdfleet new``).

The project lives outside this repository and runs the amdfleet that pip installed:

* ``Pulumi.yaml``: runtime python with the virtualenv amdfleet is installed in, and the
  ``plugins.providers`` entry naming that virtualenv's ``bin`` (where pip put the
  ``pulumi-resource-amdfleet`` console script). Without it the engine would look for the
  plugin in its plugin cache, or try to download a plugin called ``amdfleet``, and fail;
* ``__main__.py``: ``from amdfleet.program import main; main()``;
* ``requirements.txt``: this amdfleet's version, pinned;
* ``Pulumi.<stack>.yaml``: a committed stack as amdfleet carries it, its
  ``yaml-language-server`` modeline pointing at the stack schema the installed package
  carries (nothing Pulumi encrypted in a checkout's copy is taken along);
* ``README.md``: how to install, one ``pulumi config set --secret amdfleet:KEY`` line per
  secret the stack references, ``pulumi up`` and ``pulumi destroy``.
"""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from amdfleet.config import STACKS_DIR, StackSpec, load_stack_file
from amdfleet.config.stack import SECRET_KEY_FIELDS
from amdfleet.errors import AmdFleetError

PLUGIN = "pulumi-resource-amdfleet"
SCHEMA_FILE = STACKS_DIR.parent / "schema" / "stack.schema.json"
"""The stack file's JSON Schema as this amdfleet carries it (a checkout's schema/)."""
PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
MODELINE_RE = re.compile(r"^# yaml-language-server: \$schema=.*\n", re.MULTILINE)
SECRET_HINTS: dict[tuple[str, ...], tuple[str, str]] = {
    ("serving", "api_key_secret"): (
        "openssl rand -hex 24 | ",
        "the API key clients send as `Authorization: Bearer ...` (any random string)",
    ),
    ("weights", "hf_token_secret"): ("", "your Hugging Face token (prompted for)"),
    ("image_build", "registry", "password_secret"): ("", "the image registry's password"),
    ("fleet", "cloud", "api_token_secret"): ("", "the cloud provider's API token"),
}
"""Per secret field: what to pipe into ``pulumi config set --secret`` and what it is."""


@dataclass(frozen=True)
class Installation:
    """Where this amdfleet is installed: what a new project's Pulumi.yaml points at."""

    version: str
    scripts: Path
    """The directory holding the ``pulumi-resource-amdfleet`` console script."""
    virtualenv: Path | None
    """The virtualenv amdfleet is installed in (None: Python's own environment)."""


def this_installation() -> Installation:
    """The running amdfleet's installation (its virtualenv and scripts directory)."""
    in_virtualenv = sys.prefix != sys.base_prefix
    return Installation(
        version=metadata.version("amdfleet"),
        scripts=Path(sysconfig.get_path("scripts")),
        virtualenv=Path(sys.prefix) if in_virtualenv else None,
    )


def new_project(
    directory: Path,
    *,
    stack: str = "local",
    name: str | None = None,
    installation: Installation | None = None,
) -> list[Path]:
    """Write a project deploying the committed stack ``stack`` into ``directory`` (new,
    empty, or holding only the virtualenv amdfleet runs from), named ``name`` (default:
    the directory's name). Returns the files written.

    Raises :class:`AmdFleetError` before writing anything when ``directory`` is not empty,
    the name is not a valid Pulumi project name, the installation has no plugin, or the
    stack is unknown or invalid (:class:`ConfigError`).
    """
    installation = installation or this_installation()
    directory = directory.absolute()
    project = name if name is not None else directory.name
    _check_directory(directory, installation)
    _check_name(project, given=name is not None)
    _check_plugin(installation)
    loaded = load_stack_file(stack)
    source = Path(loaded.source)
    files = {
        "Pulumi.yaml": project_file(project, loaded.spec, installation, directory),
        "__main__.py": MAIN_PY,
        "requirements.txt": f"amdfleet=={installation.version}\n",
        f"Pulumi.{loaded.spec.name}.yaml": stack_file(source.read_text(), directory, source),
        "README.md": readme(project, loaded.spec, installation),
    }
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in files.items():
        path = directory / file_name
        path.write_text(text)
        written.append(path)
    return written


MAIN_PY = '''"""This project's Pulumi program: amdfleet's (see amdfleet.program)."""

from amdfleet.program import main

main()
'''


def project_file(project: str, spec: StackSpec, installation: Installation, directory: Path) -> str:
    """The project's Pulumi.yaml (paths inside ``directory`` written relative to it)."""
    options = "    toolchain: pip\n"
    if installation.virtualenv is not None:
        options += f"    virtualenv: {_yaml_path(installation.virtualenv, directory)}\n"
    description = spec.description or f"amdfleet stack {spec.name}"
    return (
        f"name: {json.dumps(project)}\n"
        f"description: {json.dumps(description)}\n"
        "runtime:\n"
        "  name: python\n"
        "  options:\n"
        f"{options}"
        "plugins:\n"
        "  providers:\n"
        "    # amdfleet's provider plugin: the pulumi-resource-amdfleet console script pip\n"
        "    # installed with amdfleet. Without this entry the engine looks for a plugin\n"
        "    # named amdfleet in its plugin cache (and would try to download it).\n"
        "    - name: amdfleet\n"
        f"      path: {_yaml_path(installation.scripts, directory)}\n"
    )


def stack_file(text: str, directory: Path, source: Path) -> str:
    """A committed stack's text for a project in ``directory``: its schema modeline
    pointing at the installed schema, and nothing Pulumi encrypted for a checkout's
    stack (``encryptionsalt``, ``secure:`` values) taken along."""
    schema = _schema_reference(directory)
    modeline = f"# yaml-language-server: $schema={schema}\n"
    body = _without_encrypted(MODELINE_RE.sub("", text, count=1), source)
    return modeline + body


def readme(project: str, spec: StackSpec, installation: Installation) -> str:
    """The project's README: install, secrets, up, destroy."""
    stack = spec.name
    venv = installation.virtualenv or Path("<your virtualenv>")
    secrets = "".join(
        f"# {what}\n{pipe}pulumi config set --secret amdfleet:{key} -s {stack}\n"
        for key, pipe, what in secret_lines(spec)
    )
    return f"""# {project}

A Pulumi project that deploys amdfleet's `{stack}` stack: {spec.description or stack}.
It was made by `amdfleet new` with amdfleet {installation.version}.

## Install

amdfleet (with its provider plugin, `pulumi-resource-amdfleet`) is installed in
`{venv}`, which `Pulumi.yaml` names twice: as the program's virtualenv and as the
directory of the `amdfleet` provider plugin. To rebuild that virtualenv elsewhere:

```sh
python3 -m venv .venv
.venv/bin/pip install -r requirements.txt    # or the amdfleet wheel you were given
```

then point `runtime.options.virtualenv` and the `amdfleet` plugin's `path` in
`Pulumi.yaml` at `.venv` and `.venv/bin`. You also need the Pulumi CLI (`pulumi`) on
`PATH` and a backend: `pulumi login` (or `pulumi login file://<dir>` for state on this
machine).

## Secrets

The stack names these secret config keys; set each once, encrypted by Pulumi. They are
in the `amdfleet:` namespace, where amdfleet reads its config (a bare `apiKey` would be
this project's, `{project}:apiKey`):

```sh
pulumi stack init {stack}
{secrets}```

## Deploy

`Pulumi.{stack}.yaml` is the stack (its first line tells editors running
yaml-language-server where the schema is). `amdfleet plan Pulumi.{stack}.yaml` checks it
and prints the plan without deploying anything.

```sh
pulumi up -s {stack}                      # deploys, verifies, exports endpoint, ready, ...
pulumi stack output endpoint -s {stack}
pulumi destroy -s {stack}                 # stops and removes everything it made
```
"""


def secret_lines(spec: StackSpec) -> list[tuple[str, str, str]]:
    """``(key, what to pipe in, what it is)`` for every secret key the stack references,
    in :data:`SECRET_KEY_FIELDS` order."""
    lines = []
    needed = set(spec.secret_keys)
    for path in SECRET_KEY_FIELDS:
        key = _value_at(spec, path)
        if key in needed:
            pipe, what = SECRET_HINTS[path]
            lines.append((key, pipe, f"{'.'.join(path)}: {what}"))
            needed.discard(key)
    return lines


def _check_directory(directory: Path, installation: Installation) -> None:
    """A new or empty directory, or one holding only amdfleet's own virtualenv."""
    if directory.exists() and not directory.is_dir():
        raise AmdFleetError(f"DIR {directory} is a file: give a new or empty directory")
    venv = installation.virtualenv.absolute() if installation.virtualenv else None
    entries = sorted(
        p.name for p in (directory.iterdir() if directory.is_dir() else []) if p != venv
    )
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise AmdFleetError(
            f"DIR {directory} is not empty ({len(entries)} entries: {shown}); amdfleet new "
            "writes a project only into a new or empty directory (or one holding only the "
            "virtualenv it runs from), so nothing of yours is overwritten: give another DIR"
        )


def _check_name(project: str, *, given: bool) -> None:
    if PROJECT_NAME_RE.match(project):
        return
    where = "--name" if given else "DIR's name, the default --name,"
    raise AmdFleetError(
        f"{where} {project!r} is not a Pulumi project name: use 1-100 letters, digits, "
        "'-', '_' or '.'" + ("" if given else " (pass --name NAME)")
    )


def _check_plugin(installation: Installation) -> None:
    if (installation.scripts / PLUGIN).is_file():
        return
    raise AmdFleetError(
        f"{PLUGIN} is not in {installation.scripts}: the project would have no amdfleet "
        "provider plugin; install amdfleet with pip (its wheel carries the plugin) into "
        "the environment that runs `amdfleet new`"
    )


def _without_encrypted(text: str, source: Path) -> str:
    """``text`` without ``encryptionsalt`` and the ``KEY:\\n  secure: ...`` entries Pulumi
    writes into a stack file once its secrets are set (they belong to that stack)."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.startswith("encryptionsalt:") or line.lstrip().startswith("secure:"):
            continue
        if line.rstrip().endswith(":") and following.lstrip().startswith("secure:"):
            continue
        kept.append(line)
    result = "".join(kept)
    document = yaml.safe_load(result) or {}
    config = document.get("config") or {}
    if "encryptionsalt" in document or any(  # a form the lines above missed
        isinstance(value, dict) and "secure" in value for value in config.values()
    ):
        raise AmdFleetError(
            f"{source} holds encrypted values in a form amdfleet new cannot leave out; "
            "copy the stack by hand without its secure: values"
        )
    return result


def _schema_reference(directory: Path) -> str:
    """The installed schema as the modeline names it: a path relative to the stack file
    when amdfleet is installed inside the project, else a ``file://`` URI."""
    if SCHEMA_FILE.is_relative_to(directory):
        return str(SCHEMA_FILE.relative_to(directory))
    return SCHEMA_FILE.as_uri()


def _value_at(spec: StackSpec, path: tuple[str, ...]) -> str | None:
    node: object = spec
    for part in path:
        node = getattr(node, part, None)
    return node if isinstance(node, str) else None


def _yaml_path(path: Path, directory: Path) -> str:
    """``path`` as a YAML string: relative when inside ``directory``, else absolute."""
    absolute = path.absolute()
    if absolute.is_relative_to(directory):
        return json.dumps(str(absolute.relative_to(directory)))
    return json.dumps(str(absolute))
