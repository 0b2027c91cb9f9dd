"""Docker steps the image providers share on an open connection: inspect an image, read
the registry digest docker recorded for it, and show a pull or build as it runs."""

from __future__ import annotations

import time

from amdfleet.errors import RemoteError
from amdfleet.providers.progress import ResourceProgress, format_duration
from amdfleet.remote.images import inspect_command, parse_inspect
from amdfleet.remote.registry import digests_command, repo_digest
from amdfleet.remote.transport.connection import Connection

CALL_TIMEOUT = 60.0
"""Time limit of a short docker command (inspect, list digests, remove)."""


def inspect_image(conn: Connection, image: str) -> dict[str, str] | None:
    """The image's id, repo digest and Dockerfile label on the host, or None if absent."""
    result = conn.run(inspect_command(image), timeout=CALL_TIMEOUT, check=False)
    return parse_inspect(result.stdout) if result.ok else None


def registry_ref(conn: Connection, image: str, missing: str, hint: str) -> str:
    """``<repository>@<digest>`` of ``image`` as the host's docker recorded it from its
    registry; raises RemoteError(``missing``, ``hint``) when it recorded none."""
    listed = conn.run(digests_command(image), timeout=CALL_TIMEOUT)
    ref = repo_digest(listed.stdout, image)
    if ref is None:
        raise RemoteError(conn.host, missing, hint)
    return ref


class DockerLog:
    """Shows the time spent and the latest line of a pull or build as the status."""

    def __init__(self, doing: str, progress: ResourceProgress) -> None:
        self._doing = doing
        self._progress = progress
        self._start = time.monotonic()

    def line(self, text: str) -> None:
        """One line docker printed."""
        self._progress.status(f"{self._doing} ({self.took()}): {text.strip()}")

    @property
    def elapsed(self) -> float:
        """Seconds since the pull or build started."""
        return time.monotonic() - self._start

    def took(self) -> str:
        """Time since the pull or build started, as a person reads it."""
        return format_duration(self.elapsed)
