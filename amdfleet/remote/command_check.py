"""Pure command builders for the deploy-time check of an engine command line.

Before weights are staged or an engine starts, the head hands each node's rendered
command to the engine's own parser in the engine's own environment: the pinned image
(docker runtime) or the engine's virtualenv (process runtime). The check loads no model
and opens no GPU; it exits 0 when the engine accepts the command and non-zero with the
engine's own message when not (see :meth:`amdfleet.engines.base.Engine.check_commands`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amdfleet.shellwords import shell_join


def check_command(
    runtime: str,
    check_argv: Sequence[str],
    env: Mapping[str, str],
    *,
    image: str | None = None,
    gpu: bool = False,
) -> str:
    """The shell command that runs ``check_argv`` as the engine would run: with the
    node's (non-secret) environment, in ``image`` for the docker runtime (never pulled,
    no network, the GPUs' device nodes as the engine gets them so the engine resolves
    its platform the same way), or on the host for the process runtime."""
    if runtime == "process":
        assignments = [f"{k}={v}" for k, v in sorted(env.items())]
        return "cd / && " + shell_join(["env", *assignments, *check_argv])
    if image is None:
        raise ValueError("the docker runtime's check needs the image")
    words = ["docker", "run", "--rm", "--pull=never", "--network", "none"]
    if gpu:
        words += ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]
    for key, value in sorted(env.items()):
        words += ["--env", f"{key}={value}"]
    words += ["--entrypoint", check_argv[0], image, *check_argv[1:]]
    return shell_join(words)
