"""Every committed stack renders exactly the files recorded in ``golden/rendered.json``.

The record holds the SHA-256 of each rendered launch script, env file, systemd unit and
Dockerfile (``plan.json``, a dump of the plan, and ``manifest.json``, its index, are left
out: they change with the plan's shape, not with what runs). A refactor must leave the
record unchanged; a deliberate change to what runs on a host updates it with
``python -m tests.unit.test_rendered_golden`` and says why in its commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from amdfleet.render import render_plan

HERE = Path(__file__).parent
REPO = HERE.parent.parent
GOLDEN = HERE / "golden" / "rendered.json"
STACK_FILES = sorted((REPO / "stacks").glob("Pulumi.*.yaml")) + sorted(
    (HERE / "stacks").glob("Pulumi.*.yaml")
)
UNRECORDED = {"plan.json", "manifest.json"}


def rendered_hashes(path: Path) -> dict[str, str]:
    """SHA-256 of every recorded file the stack at ``path`` renders, by path."""
    files = render_plan(plan(load_stack_file(str(path)).spec))
    return {
        f.path: hashlib.sha256(f.content.encode()).hexdigest()
        for f in files
        if f.path not in UNRECORDED
    }


def _name(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def test_the_record_covers_every_committed_stack() -> None:
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(recorded) == sorted(_name(p) for p in STACK_FILES)


@pytest.mark.parametrize("path", STACK_FILES, ids=_name)
def test_rendered_files_match_the_record(path: Path) -> None:
    recorded = json.loads(GOLDEN.read_text())[_name(path)]
    assert rendered_hashes(path) == recorded, (
        f"{path.name} renders other files than recorded; if the change is deliberate, "
        "run `python -m tests.unit.test_rendered_golden` and say why in the commit"
    )


if __name__ == "__main__":
    record = {_name(p): rendered_hashes(p) for p in STACK_FILES}
    GOLDEN.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"recorded {sum(map(len, record.values()))} files of {len(record)} stacks\n")
