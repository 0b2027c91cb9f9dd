"""Pure command builders for staging model weights into a host's Hugging Face cache.

Staging runs on every node in parallel (one ModelWeights resource per node) so each
node reads its weights from local disk. A marker file per checkpoint and revision
records what amdfleet staged, so a second ``up`` skips the download and ``destroy``
removes only what amdfleet itself downloaded.

The download uses ``huggingface_hub.snapshot_download`` with the Python of the engine
(the engine image for the docker runtime, the engine's environment for the process
runtime), so hosts need nothing extra installed. The token is read from stdin into the
environment of that one command and never appears in a command line.

While it downloads, the command reports progress on stdout (parsed by
:func:`parse_progress`): once ``AMDFLEET_EXPECTED {"bytes", "files"}`` from the hub's file
listing (skipped if the listing fails), then every :data:`PROGRESS_EVERY_S` seconds
``AMDFLEET_PROGRESS {"bytes", "files"}``: the bytes in the repo's blob store (partial
files included) and the number of finished files.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass

from amdfleet.remote.programs import program

MARKER_DIR = ".amdfleet"
RESULT_PREFIX = "AMDFLEET_SNAPSHOT "
EXPECTED_PREFIX = "AMDFLEET_EXPECTED "
PROGRESS_PREFIX = "AMDFLEET_PROGRESS "
PROGRESS_EVERY_S = 2
KILL_AFTER_S = 10
"""Seconds between the TERM and the KILL sent to a download that outlives its deadline."""
TIMED_OUT = 124
"""Exit code of a download the host stopped at its deadline (coreutils ``timeout``)."""

_DOWNLOAD_PY = program("snapshot_download.py")


@dataclass(frozen=True)
class DownloadProgress:
    """One progress line of a download: bytes and files, ``expected`` (the repo's
    totals, printed once) or staged so far."""

    bytes: int
    files: int
    expected: bool = False


@dataclass(frozen=True)
class WeightsTarget:
    """A checkpoint to stage: hub repo + revision into ``cache_dir`` (HF_HOME)."""

    repo: str
    revision: str | None
    cache_dir: str

    @property
    def slug(self) -> str:
        """File-name-safe id of repo and revision."""
        text = f"{self.repo}@{self.revision or 'main'}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)

    @property
    def marker(self) -> str:
        """Marker file written after a successful download."""
        return posixpath.join(self.cache_dir, MARKER_DIR, f"{self.slug}.json")

    @property
    def repo_cache(self) -> str:
        """The hub cache folder of the repo (removed on destroy if amdfleet made it)."""
        return posixpath.join(self.cache_dir, "hub", "models--" + self.repo.replace("/", "--"))


def read_marker_command(target: WeightsTarget) -> str:
    """Print the marker's JSON (nothing when there is no marker)."""
    return f"cat -- {shlex.quote(target.marker)} 2>/dev/null; true"


def check_local_command(path: str) -> str:
    """Exit 0 when ``path`` holds a checkpoint (a config.json)."""
    return f"test -f {shlex.quote(posixpath.join(path, 'config.json'))}"


def download_command(
    target: WeightsTarget,
    python: str,
    docker_image: str | None,
    endpoint: str | None = None,
    timeout_s: int | None = None,
) -> str:
    """Download the snapshot; prints ``AMDFLEET_SNAPSHOT {json}`` with its host path,
    after progress lines (see :func:`parse_progress`).

    With ``docker_image`` the download runs inside the engine image with the cache
    mounted at the same path; otherwise with ``python`` on the host. ``endpoint`` is a
    hub mirror (HF_ENDPOINT). The HF token, if any, is the command's stdin. With
    ``timeout_s`` the host itself stops the download after that long (exit
    :data:`TIMED_OUT`): a download that outlived the SSH call would go on filling the
    cache after the caller gave up and cleaned up.
    """
    args = " ".join(
        shlex.quote(a) for a in (target.repo, target.revision or "", str(PROGRESS_EVERY_S))
    )
    cache = shlex.quote(target.cache_dir)
    env = f"HF_HOME={cache} HF_HUB_DISABLE_PROGRESS_BARS=1"
    if endpoint:
        env += f" HF_ENDPOINT={shlex.quote(endpoint)}"
    token = '_af_t=$(cat); if [ -n "$_af_t" ]; then export HF_TOKEN="$_af_t"; fi; unset _af_t; '
    code = shlex.quote(_DOWNLOAD_PY)
    limit = f"timeout -k {KILL_AFTER_S} {int(timeout_s)} " if timeout_s else ""
    if docker_image:
        endpoint_env = f"-e HF_ENDPOINT={shlex.quote(endpoint)} " if endpoint else ""
        # --init: the TERM that docker proxies must stop python, which as PID 1 ignores it
        run = (
            f"{limit}docker run --rm --init --pull=never --network=host -v {cache}:{cache} "
            f"-e HF_HOME={cache} -e HF_TOKEN -e HF_HUB_DISABLE_PROGRESS_BARS=1 {endpoint_env}"
            f"--entrypoint python3 {shlex.quote(docker_image)} -c {code} {args}"
        )
    else:
        run = f"{env} {limit}{shlex.quote(python)} -c {code} {args}"
    return f"mkdir -p {cache} && {token}{run}"


def write_marker_command(target: WeightsTarget, snapshot: dict[str, str], downloaded: bool) -> str:
    """Record a finished download (atomically)."""
    record = json.dumps(
        {
            "repo": target.repo,
            "revision": target.revision,
            "path": snapshot["path"],
            "commit": snapshot.get("commit", ""),
            "downloaded_by_amdfleet": downloaded,
        },
        sort_keys=True,
    )
    marker = shlex.quote(target.marker)
    tmp = shlex.quote(target.marker + ".tmp")
    folder = shlex.quote(posixpath.dirname(target.marker))
    return (
        f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(record)} >{tmp} && mv -f {tmp} {marker}"
    )


def remove_command(target: WeightsTarget) -> str:
    """Remove what amdfleet downloaded for this checkpoint (the repo's cache folder and
    the download locks huggingface_hub keeps beside it), and its marker."""
    repo_folder = posixpath.basename(target.repo_cache)
    locks = posixpath.join(target.cache_dir, "hub", ".locks", repo_folder)
    paths = (target.repo_cache, locks, target.marker)
    return "rm -rf -- " + " ".join(shlex.quote(p) for p in paths)


def parse_snapshot(output: str) -> dict[str, str] | None:
    """The ``{"path", "commit"}`` record printed by a download, or None."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            return {"path": str(data["path"]), "commit": str(data.get("commit", ""))}
    return None


def parse_progress(line: str) -> DownloadProgress | None:
    """The progress record of one line of download output, or None for any other line."""
    for prefix, expected in ((EXPECTED_PREFIX, True), (PROGRESS_PREFIX, False)):
        if line.startswith(prefix):
            try:
                data = json.loads(line[len(prefix) :])
                return DownloadProgress(int(data["bytes"]), int(data["files"]), expected)
            except (ValueError, KeyError, TypeError):
                return None
    return None


def parse_marker(output: str) -> dict[str, object] | None:
    """The marker record printed by :func:`read_marker_command`, or None."""
    text = output.strip()
    if not text:
        return None
    try:
        data = json.loads(text.splitlines()[-1])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
