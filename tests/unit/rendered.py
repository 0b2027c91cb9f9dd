"""Helpers that read rendered launch files back into argv and env (test support)."""

from __future__ import annotations

import shlex

from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from amdfleet.render import SECRETS_LOADER, RenderedFile, render_plan


def render_stack(name: str) -> dict[str, RenderedFile]:
    """Render a stack from stacks/ and index the files by path."""
    return {f.path: f for f in render_plan(plan(load_stack_file(name).spec))}


def node_file(files: dict[str, RenderedFile], rank: int, name: str) -> str:
    """Content of ``name`` for the node with ``rank``."""
    matches = [
        f for path, f in files.items() if path.startswith(f"node{rank}-") and path.endswith(name)
    ]
    assert len(matches) == 1, f"no single {name} for node {rank} in {sorted(files)}"
    return matches[0].content


def exec_argv(script: str) -> list[str]:
    """The argv of the script's final ``exec`` statement (the last statement).

    Line continuations are joined first, also inside quoted words (a ``bash -c``
    script), which changes no word's meaning for these tests.
    """
    marker = "\nexec docker run " if "\nexec docker run " in script else "\nexec "
    start = script.rindex(marker) + 1
    return shlex.split(script[start:].replace("\\\n", " "))[1:]


def env_lines(env_file: str) -> dict[str, str]:
    """KEY=VALUE lines of an env file, comments skipped."""
    out = {}
    for line in env_file.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def flag_value(argv: list[str], flag: str) -> str:
    """The value following ``flag`` in argv (``--flag value`` or ``--flag=value``)."""
    for i, token in enumerate(argv):
        if token == flag:
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {argv}")


def container_command(argv: list[str]) -> tuple[str, list[str]]:
    """The image and the command a docker-runtime launch script's container runs: its
    entrypoint is the secrets loader (``sh -c <loader> sh``), which execs the rest."""
    entry = argv.index("--entrypoint")
    assert argv[entry + 1] == "sh"
    image = argv[entry + 2]
    assert argv[entry + 3 : entry + 6] == ["-c", SECRETS_LOADER, "sh"]
    return image, argv[entry + 6 :]
