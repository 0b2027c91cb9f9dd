"""Docker fact: the version of a reachable docker daemon."""

from __future__ import annotations

import re

from amdfleet.remote.facts.registry import Fact, register
from amdfleet.remote.facts.system import parse_line


def parse_docker_version(text: str) -> str | None:
    """Server version from ``docker version --format '{{.Server.Version}}'``.

    None when docker is absent or its daemon is unreachable (the command then prints
    an empty line or an error).
    """
    line = parse_line(text)
    return line if re.fullmatch(r"\d+\.\d+[\w.+~-]*", line) else None


# ------------------------------------------------------------------------- facts

DOCKER_VERSION = register(
    Fact("docker_version", "docker version --format '{{.Server.Version}}'", parse_docker_version)
)
"""Only a successful ``docker version`` counts: a client without daemon exits 1 (the
probe keeps this fact only when its section exited 0)."""
