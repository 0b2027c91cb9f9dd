"""A Pulumi project somewhere else that runs a program of this checkout.

The campaign runner keeps each campaign's stacks in a project under the campaign's
directory, and the tests keep theirs in throwaway workspaces: both need this checkout's
``Pulumi.yaml`` (runtime, virtualenv, the ``amdfleet`` provider plugin's directory) with
its relative paths made absolute, a ``main`` that is this repository (or a test program),
and their own ``stacks`` directory.

Only a checkout has that project: an installed amdfleet (its wheel) raises a clear
error instead (a user's own project is made by ``amdfleet new``, :mod:`amdfleet.scaffold`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from amdfleet.errors import AmdFleetError

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_project(directory: Path, *, main: Path = REPO_ROOT, name: str | None = None) -> Path:
    """Write ``directory``/Pulumi.yaml (and make ``directory``/stacks): this checkout's
    project, running ``main``, named ``name`` (default: this project's name). Returns the
    file. Raises :class:`AmdFleetError` when amdfleet runs from an installed copy (no
    checkout, so no project to run)."""
    source = REPO_ROOT / "Pulumi.yaml"
    if not source.is_file():
        raise AmdFleetError(
            f"no Pulumi.yaml at {REPO_ROOT}: this amdfleet is installed, not a checkout of "
            "its repository, so it has no project to run stacks with; run this from a "
            "checkout (git clone, then scripts/setup)"
        )
    document = yaml.safe_load(source.read_text())
    if name is not None:
        document["name"] = name
    options = document.setdefault("runtime", {}).setdefault("options", {})
    if "virtualenv" in options:
        options["virtualenv"] = str((REPO_ROOT / options["virtualenv"]).resolve())
    document["main"] = str(main)
    document["stackConfigDir"] = "stacks"
    for plugin in document.get("plugins", {}).get("providers", []):
        if "path" in plugin:
            plugin["path"] = str((REPO_ROOT / plugin["path"]).resolve())
    (directory / "stacks").mkdir(parents=True, exist_ok=True)
    path = directory / "Pulumi.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
