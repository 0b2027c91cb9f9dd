"""What amdfleet's wheel carries, checked without building it (the build itself, and the
installed copy deploying for real, are ``tests/program/test_user_project.py``'s).

Every file amdfleet may read at run time lives under ``amdfleet/`` (``amdfleet/data/``
links to ``templates/``, ``stacks/`` and ``schema/``); each one that is not a Python
module must match a ``[tool.setuptools.package-data]`` pattern, or an installed amdfleet
would miss it (the parity prompts once did).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from amdfleet import pulumi_project
from amdfleet.config import STACKS_DIR
from amdfleet.errors import AmdFleetError
from amdfleet.scaffold import SCHEMA_FILE
from amdfleet.templates import TEMPLATES_DIR

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "amdfleet"


def test_every_data_file_under_the_package_is_in_the_wheel() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    carried: set[Path] = set()
    for package, patterns in package_data.items():
        base = ROOT / package.replace(".", "/")
        for pattern in patterns:
            carried |= {p for p in base.glob(pattern) if p.is_file()}
    data = set()
    for directory, dirs, files in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        data |= {Path(directory, f) for f in files if not f.endswith((".py", ".pyc"))}
    relative = sorted(str(p.relative_to(PACKAGE)) for p in data - carried)
    assert relative == []
    assert len(data) >= 20  # the links are followed: templates, stacks, schema, manifests


def test_amdfleet_reads_its_data_through_the_package() -> None:
    """In a checkout the package's paths are the repository's directories (so a stack
    Pulumi edits is the one amdfleet reads); installed, they are the wheel's copies."""
    assert TEMPLATES_DIR == ROOT / "templates"
    assert STACKS_DIR == ROOT / "stacks"
    assert SCHEMA_FILE == ROOT / "schema" / "stack.schema.json"
    for name in ("templates", "stacks", "schema"):
        link = PACKAGE / "data" / name
        assert link.is_symlink() and link.resolve() == ROOT / name


def test_an_installed_amdfleet_has_no_project_for_campaigns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pulumi_project, "REPO_ROOT", tmp_path / "site-packages")
    with pytest.raises(AmdFleetError, match=r"no Pulumi.yaml at .*site-packages.*checkout"):
        pulumi_project.write_project(tmp_path / "campaign")
    assert not (tmp_path / "campaign").exists()
