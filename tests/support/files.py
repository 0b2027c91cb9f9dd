"""Reading the logs of processes the test support starts."""

from __future__ import annotations

from pathlib import Path

from amdfleet.remote.transport.connection import tail_lines


def tail_file(path: Path, n: int = 20, missing: str = "(no log)") -> str:
    """The last ``n`` lines of ``path``, or ``missing`` when it cannot be read."""
    try:
        return tail_lines(path.read_text(errors="replace"), n)
    except OSError:
        return missing
