"""Pure command builders for building an image once, pushing it to a registry, and
resolving and pulling images by digest (docker runtime).

Registry credentials never touch a command line or the user's docker config: a command
that needs a login runs in a throwaway ``DOCKER_CONFIG`` directory (mode 0700) that holds
the host's docker contexts and the login, the password reaches ``docker login
--password-stdin`` on the command's stdin, and the directory is removed when the command
ends, whether it succeeded or not.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex

from amdfleet.remote.images import DOCKERFILE_LABEL

BUILD_EXIT_MARK = "amdfleet: docker build exited "
"""The last line a build command prints: the build's exit status (124 on the deadline)."""
DEADLINE_EXIT = 124
"""``timeout``'s exit status when the deadline stopped the command."""
KILL_GRACE_S = 60
"""How long a build stopped at its deadline gets to end before it is killed."""

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def logged_in(command: str, registry: str, username: str | None) -> str:
    """``command`` run with a login to ``registry`` as ``username`` (password on stdin);
    without a username, ``command`` alone (an open registry, or one the host's docker
    config already has a login for)."""
    if username is None:
        return command
    login = (
        f"docker login --username {shlex.quote(username)} --password-stdin "
        f"{shlex.quote(registry)} >/dev/null"
    )
    # The current context is kept (the throwaway config would otherwise fall back to the
    # default one), and so are the context definitions it may name.
    setup = (
        "context=$(docker context show 2>/dev/null || echo default)\n"
        'source_config="${DOCKER_CONFIG:-$HOME/.docker}"\n'
        "DOCKER_CONFIG=$(mktemp -d)\n"
        "trap 'rm -rf -- \"$DOCKER_CONFIG\"' EXIT\n"
        'chmod 700 "$DOCKER_CONFIG"\n'
        'if [ -d "$source_config/contexts" ]; then cp -R "$source_config/contexts" '
        '"$DOCKER_CONFIG/"; fi\n'
        'printf \'{"currentContext": "%s"}\\n\' "$context" > "$DOCKER_CONFIG/config.json"\n'
        "export DOCKER_CONFIG\n"
    )
    return f"set -e\n{setup}{login}\n{command}\n"


def build_command(
    image: str, build_dir: str, dockerfile_sha256: str, log_path: str, timeout_s: int
) -> str:
    """Build ``image`` from ``build_dir``/Dockerfile (the directory is the whole context),
    bounded by ``timeout_s``, every line going to ``log_path`` as well as to the command's
    output; the last line is :data:`BUILD_EXIT_MARK` with the build's exit status.

    ``--force-rm`` removes the intermediate containers of a failed build too. Stopping
    the docker client at the deadline cancels the build in the daemon.
    """
    label = shlex.quote(f"{DOCKERFILE_LABEL}={dockerfile_sha256}")
    build = (
        f"timeout --kill-after={KILL_GRACE_S} {timeout_s} "
        f"docker build --force-rm -t {shlex.quote(image)} --label {label} "
        f"-f {shlex.quote(build_dir + '/Dockerfile')} {shlex.quote(build_dir)}"
    )
    return (
        f"mkdir -p -- {shlex.quote(posixpath.dirname(log_path) or '/')} && "
        f'{{ {build} 2>&1; echo "{BUILD_EXIT_MARK}$?"; }} | tee {shlex.quote(log_path)}'
    )


def build_exit(output: str) -> int | None:
    """The exit status a :func:`build_command` printed, None if it printed none (the
    command itself was cut short)."""
    for line in reversed(output.splitlines()):
        if line.startswith(BUILD_EXIT_MARK):
            value = line.removeprefix(BUILD_EXIT_MARK).strip()
            return int(value) if value.isdigit() else None
    return None


def push_command(image: str) -> str:
    """Push ``image``; its last line names the digest the registry stored."""
    return f"docker push {shlex.quote(image)}"


def pushed_digest(output: str) -> str | None:
    """The manifest digest ``docker push`` printed ("<tag>: digest: sha256:... size: N")."""
    for line in reversed(output.splitlines()):
        if "digest:" in line:
            found = _DIGEST_RE.search(line)
            if found:
                return found.group(0)
    return None


def digests_command(image: str) -> str:
    """Print the image's repo digests as one JSON list (exit 1 if absent)."""
    return f"docker image inspect --format '{{{{json .RepoDigests}}}}' {shlex.quote(image)}"


def repo_digest(output: str, image: str) -> str | None:
    """From :func:`digests_command` output, the ``name@sha256:...`` of ``image``'s own
    repository, or None."""
    want = _normal(repository(image))
    for line in reversed(output.strip().splitlines()):
        try:
            digests = json.loads(line)
        except json.JSONDecodeError:
            continue
        for ref in digests or []:
            name, _, digest = str(ref).partition("@")
            if _normal(name) == want and _DIGEST_RE.fullmatch(digest):
                return f"{repository(image)}@{digest}"
        return None
    return None


def repository(image: str) -> str:
    """``image`` without its tag or digest: ``host:5000/a/b:t`` -> ``host:5000/a/b``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def is_pinned(image: str) -> bool:
    """Whether ``image`` names a digest (``name@sha256:...``)."""
    _, _, digest = image.partition("@")
    return bool(_DIGEST_RE.fullmatch(digest))


def _normal(name: str) -> str:
    """Docker Hub's implicit parts dropped: ``docker.io/library/x`` == ``x``."""
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/")
