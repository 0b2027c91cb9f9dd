"""ModelWeights: the checkpoint staged into a node's Hugging Face cache.

One resource per node, so nodes download in parallel; every node uses the same
``cache_dir`` path. A marker per checkpoint and revision makes a second ``up`` skip the
download, and ``delete`` removes only what amdfleet downloaded (weights a user already
had in the cache, or a ``local_path``, are never deleted). The HF token is a secret
input, sent to the download command on stdin.

Progress (:mod:`amdfleet.providers.progress`): while downloading, the resource's status
shows the bytes and files staged so far against the repo's totals (as the host measures
them); a finished create leaves a note saying what was staged, or why nothing was.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from amdfleet.errors import RemoteCommandError, RemoteError
from amdfleet.providers.progress import (
    URN_KEY,
    Progress,
    format_bytes,
    format_duration,
    resource_urn,
    urn_input,
)
from amdfleet.providers.props import as_int, changed_keys, plain
from amdfleet.remote.connection import Connection
from amdfleet.remote.hosts import open_host
from amdfleet.remote.target import HostTarget
from amdfleet.remote.weights import (
    KILL_AFTER_S,
    TIMED_OUT,
    DownloadProgress,
    WeightsTarget,
    check_local_command,
    download_command,
    parse_marker,
    parse_progress,
    parse_snapshot,
    read_marker_command,
    remove_command,
    write_marker_command,
)

IDENTITY = ("host", "repo", "revision", "cache_dir", "local_path", "hub_endpoint")
_CHECK_TIMEOUT = 30.0


class ModelWeightsProvider(ResourceProvider):
    """Stages weights on one host. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Stage the checkpoint (or check a local path) and return where it is.

        Skips the download when this repo and revision were staged before. On failure
        removes a partial download it started, then raises RemoteCommandError with the
        command's last lines of output (the token never appears in it).
        """
        props = plain(props)
        with (
            Progress.for_resource(props) as progress,
            open_host(HostTarget.model_validate(props["host"]), secrets=_secrets(props)) as conn,
        ):
            staged = _stage(conn, props, progress)
        public = {k: v for k, v in props.items() if k != "hf_token"}
        return CreateResult(
            id_=f"{props['host']['name']}:{_label(props)}", outs={**public, **staged}
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Check the weights are still there; ``present`` is False when they are not."""
        props = plain(props)
        with open_host(HostTarget.model_validate(props["host"])) as conn:
            present = conn.run(
                check_local_command(props["path"]), timeout=_CHECK_TIMEOUT, check=False
            ).ok
        return ReadResult(id_=id_, outs={**props, "present": present})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Another checkpoint, revision, cache or host is a replacement; a new token or
        timeout changes nothing on the host."""
        replaces = changed_keys(olds, news, IDENTITY)
        changes = bool(replaces) or bool(changed_keys(olds, news, ("keep_on_delete",)))
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Only ``keep_on_delete`` can change in place."""
        news = plain(news)
        return UpdateResult(
            outs={**plain(olds), "keep_on_delete": news["keep_on_delete"], **urn_input(news)}
        )

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove the snapshot amdfleet downloaded (unless ``keep_on_delete``). Idempotent."""
        props = plain(props)
        if not props.get("downloaded") or props.get("keep_on_delete"):
            return
        with (
            Progress.for_resource(props) as progress,
            open_host(HostTarget.model_validate(props["host"])) as conn,
        ):
            progress.step(f"removing {_label(props)} from {props['cache_dir']}")
            conn.run(remove_command(_target(props)), timeout=600, check=True)


class ModelWeights(pulumi.dynamic.Resource, module="amdfleet", name="ModelWeights"):
    """Weights on one host; outputs ``path`` (the snapshot directory on the host)."""

    path: pulumi.Output[str]
    commit: pulumi.Output[str]
    downloaded: pulumi.Output[bool]

    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ):
        outputs = {"path": None, "commit": None, "downloaded": None, "present": None}
        urn = {URN_KEY: resource_urn(name, "ModelWeights", opts)}
        super().__init__(ModelWeightsProvider(), name, {**props, **outputs, **urn}, opts)


def _stage(conn: Connection, props: dict[str, Any], progress: Progress) -> dict[str, Any]:
    local = props.get("local_path") or (props["repo"] if props["repo"].startswith("/") else "")
    if local:
        progress.step(f"checking the checkpoint at {local}")
        _require_checkpoint(conn, local)
        progress.note(f"using the checkpoint at {local} (nothing to download)")
        return {"path": local, "commit": "", "downloaded": False, "present": True}
    target = _target(props)
    progress.step(f"looking for {_label(props)} in {target.cache_dir}")
    marker = parse_marker(conn.run(read_marker_command(target), timeout=_CHECK_TIMEOUT).stdout)
    if marker and _has_checkpoint(conn, str(marker.get("path", ""))):
        progress.note(f"{_label(props)} already staged at {marker['path']}, skipping the download")
        return {
            "path": str(marker["path"]),
            "commit": str(marker.get("commit", "")),
            "downloaded": bool(marker.get("downloaded_by_amdfleet")),
            "present": True,
        }
    return _download(conn, props, target, progress)


def _download(
    conn: Connection, props: dict[str, Any], target: WeightsTarget, progress: Progress
) -> dict[str, Any]:
    existed = conn.run(
        f"test -d {shlex.quote(target.repo_cache)}", timeout=_CHECK_TIMEOUT, check=False
    ).ok
    timeout = as_int(props["timeout_s"])
    command = download_command(
        target,
        props.get("python") or "python3",
        props.get("docker_image"),
        props.get("hub_endpoint"),
        timeout,
    )
    meter = _DownloadMeter(_label(props), progress)
    progress.step(f"downloading {_label(props)} into {target.cache_dir}")
    try:
        result = conn.run(
            command,
            # The host stops the download at ``timeout``; this only bounds the SSH call.
            timeout=timeout + KILL_AFTER_S + _CHECK_TIMEOUT,
            stdin=props.get("hf_token") or "",
            check=True,
            on_output=meter.line,
        )
    except RemoteError as e:
        if not existed:
            conn.run(remove_command(target), timeout=600, check=False)
        if isinstance(e, RemoteCommandError) and e.exit_code == TIMED_OUT:
            hint = (
                f"the download ran past timeout_s ({timeout} s) and was stopped: raise "
                "weights.timeout_s for a large checkpoint, or check the host reaches the hub"
            )
            raise RemoteCommandError(e.host, e.command, e.exit_code, e.output_tail, hint) from e
        raise
    snapshot = parse_snapshot(result.stdout)
    if snapshot is None:
        raise RemoteCommandError(
            conn.host,
            "snapshot_download",
            result.exit_code,
            result.tail(),
            "the download printed no snapshot path; is huggingface_hub installed?",
        )
    downloaded = not existed
    conn.run(write_marker_command(target, snapshot, downloaded), timeout=_CHECK_TIMEOUT)
    progress.note(meter.summary())
    return {
        "path": snapshot["path"],
        "commit": snapshot["commit"],
        "downloaded": downloaded,
        "present": True,
    }


def _require_checkpoint(conn: Connection, path: str) -> None:
    if not _has_checkpoint(conn, path):
        raise RemoteError(
            conn.host,
            f"no checkpoint at {path} (config.json missing)",
            "copy the weights there on every node, or unset weights.local_path to download",
        )


def _has_checkpoint(conn: Connection, path: str) -> bool:
    return (
        bool(path) and conn.run(check_local_command(path), timeout=_CHECK_TIMEOUT, check=False).ok
    )


def _target(props: dict[str, Any]) -> WeightsTarget:
    return WeightsTarget(
        repo=props["repo"], revision=props.get("revision"), cache_dir=props["cache_dir"]
    )


def _secrets(props: dict[str, Any]) -> list[str]:
    token = props.get("hf_token")
    return [token] if token else []


def _label(props: dict[str, Any]) -> str:
    return props.get("local_path") or f"{props['repo']}@{props.get('revision') or 'main'}"


class _DownloadMeter:
    """Turns a download's progress lines into statuses (bytes and files so far against
    the repo's totals) and its closing note."""

    def __init__(self, label: str, progress: Progress) -> None:
        self._label = label
        self._progress = progress
        self._start = time.monotonic()
        self._expected: DownloadProgress | None = None
        self._staged = DownloadProgress(0, 0)

    def line(self, text: str) -> None:
        """One line of the download's output (others than progress lines are ignored)."""
        record = parse_progress(text)
        if record is None:
            return
        if record.expected:
            self._expected = record
            return
        self._staged = record
        self._progress.status(f"downloading {self._label}: {self._amounts()}")

    def summary(self) -> str:
        """The closing note: what was downloaded and how long it took."""
        took = format_duration(time.monotonic() - self._start)
        total = self._expected or self._staged
        if not total.files:
            return f"downloaded {self._label} in {took}"
        return (
            f"downloaded {self._label} ({format_bytes(total.bytes)}, {total.files} files) in {took}"
        )

    def _amounts(self) -> str:
        staged, expected = self._staged, self._expected
        if expected is None or not expected.bytes:
            return f"{format_bytes(staged.bytes)}, {staged.files} files so far"
        share = min(staged.bytes / expected.bytes, 1.0)
        return (
            f"{format_bytes(staged.bytes)} of {format_bytes(expected.bytes)} ({share:.0%}), "
            f"{staged.files} of {expected.files} files"
        )
