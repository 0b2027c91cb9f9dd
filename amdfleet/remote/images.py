"""Pure command builders for staging a container image on a host (docker runtime).

The image is pulled once, or built from the rendered AITER + vLLM Dockerfile, before the
engine starts, so launch scripts always run ``docker run --pull=never``. ``inspect``
records the image id and repo digest: the digest is what makes runs with a moving tag
(``:latest``, ``:nightly``) comparable.
"""

from __future__ import annotations

import json
import posixpath
import shlex

INSPECT_FORMAT = (
    '{"id": {{json .Id}}, "digests": {{json .RepoDigests}}, "labels": {{json .Config.Labels}}}'
)
DOCKERFILE_LABEL = "io.amdfleet.dockerfile-sha256"
"""Label on every image amdfleet builds: the hash of the Dockerfile it was built from, so
a host holding the tag from another Dockerfile is rebuilt rather than adopted."""


def inspect_command(image: str) -> str:
    """Print the image's id and repo digests as one JSON line (exit 1 if absent)."""
    return f"docker image inspect --format {shlex.quote(INSPECT_FORMAT)} {shlex.quote(image)}"


def pull_command(image: str) -> str:
    """Pull ``image``. Not ``--quiet``: without a terminal docker prints one line per
    layer event ("<layer>: Pull complete"), which the provider shows as progress and which
    a failure's output tail keeps."""
    return f"docker pull {shlex.quote(image)}"


def build_command(image: str, dockerfile_path: str, dockerfile_sha256: str) -> str:
    """Build ``image`` from the Dockerfile at ``dockerfile_path`` (its directory is the
    build context).

    No ``--progress``: a docker CLI without the buildx plugin (the classic builder)
    rejects it, and BuildKit already prints plain progress when its output is not a
    terminal, as over an SSH command channel.
    """
    context = posixpath.dirname(dockerfile_path)
    label = shlex.quote(f"{DOCKERFILE_LABEL}={dockerfile_sha256}")
    return (
        f"docker build -t {shlex.quote(image)} --label {label} "
        f"-f {shlex.quote(dockerfile_path)} {shlex.quote(context)}"
    )


def remove_command(image: str) -> str:
    """Remove ``image``; succeeds when it is already gone or still used elsewhere."""
    return f"docker image rm {shlex.quote(image)} >/dev/null 2>&1; true"


def parse_inspect(output: str) -> dict[str, str] | None:
    """``{"image_id", "digest", "dockerfile_sha256"}`` from :func:`inspect_command`
    output (the last is empty for an image amdfleet did not build), or None."""
    for line in reversed(output.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        digests = data.get("digests") or []
        labels = data.get("labels") or {}
        return {
            "image_id": str(data.get("id", "")),
            "digest": str(digests[0]) if digests else "",
            "dockerfile_sha256": str(labels.get(DOCKERFILE_LABEL, "")),
        }
    return None
