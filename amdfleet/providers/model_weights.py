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
from pydantic import Field

from amdfleet.errors import RemoteCommandError, RemoteError
from amdfleet.providers.cloud_host import gone_with_instance
from amdfleet.providers.progress import ResourceProgress, format_bytes, format_duration
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.target import HostTarget
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


class ModelWeightsProps(ProviderProps):
    """ModelWeights' properties: which checkpoint to stage where and how (inputs; the HF
    token is a secret, passed to :class:`ModelWeights` apart), and where it is (outputs)."""

    SECRET_FIELDS = ("hf_token",)

    host: HostTarget = Field(description="The host the weights are staged on.")
    repo: str = Field(description="Hugging Face repo id, or an absolute path on the host.")
    revision: str | None = Field(None, description="Branch, tag or commit; None is main.")
    cache_dir: str = Field(description="The Hugging Face cache directory on the host.")
    local_path: str | None = Field(
        None, description="A checkpoint already on the host: checked, never downloaded."
    )
    hf_token: str | None = Field(None, description="Secret: the Hugging Face token.")
    python: str | None = Field(
        None, description="Python on the host that runs the download (default python3)."
    )
    docker_image: str | None = Field(
        None, description="Run the download in this image instead of on the host."
    )
    hub_endpoint: str | None = Field(None, description="Another Hugging Face hub URL.")
    timeout_s: int = Field(gt=0, description="Time limit of the download, in seconds.")
    keep_on_delete: bool = Field(False, description="Leave the weights on the host on delete.")
    path: str | None = Field(None, description="Output: the snapshot directory on the host.")
    commit: str | None = Field(None, description="Output: the commit staged ('' if unknown).")
    downloaded: bool | None = Field(
        None, description="Output: whether amdfleet downloaded them (only then deleted)."
    )
    present: bool | None = Field(None, description="Output: whether read found them there.")

    @property
    def label(self) -> str:
        """``repo@revision``, or the local path: what messages call the weights."""
        return self.local_path or f"{self.repo}@{self.revision or 'main'}"

    @property
    def target(self) -> WeightsTarget:
        """Where the checkpoint goes in the cache."""
        return WeightsTarget(repo=self.repo, revision=self.revision, cache_dir=self.cache_dir)


class ModelWeightsProvider(ResourceProvider):
    """Stages weights on one host. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Stage the checkpoint (or check a local path) and return where it is.

        Skips the download when this repo and revision were staged before. On failure
        removes a partial download it started, then raises RemoteCommandError with the
        command's last lines of output (the token never appears in it).
        """
        p = ModelWeightsProps.from_inputs(props)
        with ResourceProgress.for_resource(props) as progress, _open(p) as conn:
            staged = _stage(conn, p, progress)
        return CreateResult(id_=f"{p.host.name}:{p.label}", outs=p.to_outputs(**staged))

    @gone_with_instance
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Check the weights are still there; ``present`` is False when they are not."""
        p = ModelWeightsProps.from_inputs(props)
        with _open(p) as conn:
            present = conn.run(
                check_local_command(p.path or ""), timeout=_CHECK_TIMEOUT, check=False
            ).ok
        return ReadResult(id_=id_, outs=p.to_outputs(present=present))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Another checkpoint, revision, cache or host is a replacement; a new token or
        timeout changes nothing on the host. Compares raw values (``news`` may hold
        unknowns)."""
        replaces = changed_keys(olds, news, IDENTITY)
        changes = bool(replaces) or bool(changed_keys(olds, news, ("keep_on_delete",)))
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Only ``keep_on_delete`` can change in place."""
        old, new = ModelWeightsProps.from_inputs(olds), ModelWeightsProps.from_inputs(news)
        kept: dict[str, Any] = {"keep_on_delete": new.keep_on_delete}
        if new.resource_urn:
            kept["resource_urn"] = new.resource_urn
        return UpdateResult(outs=old.model_copy(update=kept).to_outputs())

    @gone_with_instance
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove the snapshot amdfleet downloaded (unless ``keep_on_delete``). Idempotent."""
        p = ModelWeightsProps.from_inputs(props)
        if not p.downloaded or p.keep_on_delete:
            return
        with ResourceProgress.for_resource(props) as progress, _open(p) as conn:
            progress.step(f"removing {p.label} from {p.cache_dir}")
            conn.run(remove_command(p.target), timeout=600, check=True)


class ModelWeights(
    AmdFleetResource, name="ModelWeights", provider=ModelWeightsProvider, props=ModelWeightsProps
):
    """Weights on one host; outputs ``path`` (the snapshot directory on the host)."""

    path: pulumi.Output[str]
    commit: pulumi.Output[str]
    downloaded: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        props: ModelWeightsProps | pulumi.Output[ModelWeightsProps],
        opts: pulumi.ResourceOptions | None = None,
        *,
        hf_token: pulumi.Input[str] | None = None,
        docker_image: pulumi.Input[str] | None = None,
    ):
        deferred: dict[str, Any] = {"docker_image": docker_image} if docker_image else {}
        inputs = ModelWeightsProps.inputs_of(
            props,
            hf_token=pulumi.Output.secret(hf_token) if hf_token is not None else None,
            **deferred,
        )
        super().__init__(name, inputs, opts)


def _open(p: ModelWeightsProps) -> Connection:
    """A connection that masks the token in everything read back from the host."""
    return open_host(p.host, secrets=[p.hf_token] if p.hf_token else [])


def _stage(conn: Connection, p: ModelWeightsProps, progress: ResourceProgress) -> dict[str, Any]:
    local = p.local_path or (p.repo if p.repo.startswith("/") else "")
    if local:
        progress.step(f"checking the checkpoint at {local}")
        _require_checkpoint(conn, local)
        progress.note(f"using the checkpoint at {local} (nothing to download)")
        return {"path": local, "commit": "", "downloaded": False, "present": True}
    target = p.target
    progress.step(f"looking for {p.label} in {target.cache_dir}")
    marker = parse_marker(conn.run(read_marker_command(target), timeout=_CHECK_TIMEOUT).stdout)
    if marker and _has_checkpoint(conn, str(marker.get("path", ""))):
        progress.note(f"{p.label} already staged at {marker['path']}, skipping the download")
        return {
            "path": str(marker["path"]),
            "commit": str(marker.get("commit", "")),
            "downloaded": bool(marker.get("downloaded_by_amdfleet")),
            "present": True,
        }
    return _download(conn, p, target, progress)


def _download(
    conn: Connection, p: ModelWeightsProps, target: WeightsTarget, progress: ResourceProgress
) -> dict[str, Any]:
    existed = conn.run(
        f"test -d {shlex.quote(target.repo_cache)}", timeout=_CHECK_TIMEOUT, check=False
    ).ok
    timeout = p.timeout_s
    command = download_command(
        target, p.python or "python3", p.docker_image, p.hub_endpoint, timeout
    )
    meter = _DownloadMeter(p.label, progress)
    progress.step(f"downloading {p.label} into {target.cache_dir}")
    try:
        result = conn.run(
            command,
            # The host stops the download at ``timeout``; this only bounds the SSH call.
            timeout=timeout + KILL_AFTER_S + _CHECK_TIMEOUT,
            stdin=p.hf_token or "",
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


class _DownloadMeter:
    """Turns a download's progress lines into statuses (bytes and files so far against
    the repo's totals) and its closing note."""

    def __init__(self, label: str, progress: ResourceProgress) -> None:
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
