"""Whether processes the tests started still run, read from /proc.

This machine's PID 1 reaps nothing, so a process that died after its parent did stays a
zombie a while: a zombie (``Z``) or dead (``X``) process counts as gone.
"""

from __future__ import annotations

from pathlib import Path


def _stat_fields(proc: Path) -> list[str] | None:
    """The fields of ``proc``/stat after the command name (state first), or None."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Process ``pid`` exists and is neither a zombie nor dead."""
    fields = _stat_fields(Path(f"/proc/{pid}"))
    return fields is not None and fields[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """A live (not zombie) process is in process group ``pgid``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        fields = _stat_fields(proc)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
