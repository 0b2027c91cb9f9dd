"""Reading the logs of processes the test support starts, and committed generated files."""

from __future__ import annotations

import difflib
from pathlib import Path

from amdfleet.remote.transport.connection import tail_lines


def tail_file(path: Path, n: int = 20, missing: str = "(no log)") -> str:
    """The last ``n`` lines of ``path``, or ``missing`` when it cannot be read."""
    try:
        return tail_lines(path.read_text(errors="replace"), n)
    except OSError:
        return missing


def stale_diff(committed: Path, generated: str, generator: str) -> str:
    """A unified diff from the committed copy of a generated file to what ``generator``
    writes now (``generated``): empty when the copy is current."""
    return "".join(
        difflib.unified_diff(
            committed.read_text().splitlines(keepends=True),
            generated.splitlines(keepends=True),
            f"{committed.parent.name}/{committed.name} (committed)",
            f"{generator} (generated)",
        )
    )
