"""Tiny but real providers for testing amdfleet's plugin server beyond its real resources.

They are served by the same server as amdfleet's resources, through a test-only plugin
(tests/support/sample_plugin.py), under the types of :data:`SAMPLE_PROVIDERS`.

``SampleFile`` writes a text file on a host (over SSH with a pinned key, or locally) and
a token file beside it whose secret content goes through stdin, never a command line. Like
amdfleet's providers it keeps the secret out of its outputs, so ``read`` and ``delete``
only have it because the plugin hands them the resource's inputs: read reports whether
the token file still holds it, delete refuses to remove a file whose token it was not
given. It follows the project's provider rules: stateless (connections are opened inside
each method), create all-or-nothing, delete idempotent, read re-collects the live state.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import threading
from typing import Any

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from amdfleet.errors import RemoteError
from amdfleet.providers.props import plain
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.local import LocalConnection
from amdfleet.remote.transport.ssh import connect
from amdfleet.remote.transport.target import HostTarget

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
_REPLACE_KEYS = ("host", "path")
_UPDATE_KEYS = ("content", "mode")  # the token is an input only, as secrets are
SAMPLE_FILE = "sample:index:SampleFile"
RENDEZVOUS = "sample:index:Rendezvous"
FAILING = "sample:index:Failing"


def open_connection(host: dict[str, Any]) -> Connection:
    """A connection for a ``host`` prop: ``{"connection": "local"}`` or a HostTarget dict."""
    if host.get("connection") == "local":
        return LocalConnection(str(host.get("name", "local")))
    return connect(HostTarget.model_validate(host), timeout=CONNECT_TIMEOUT)


def token_path(path: str) -> str:
    """Where the token file of ``path`` lives."""
    return path + ".token"


class SampleFileProvider(ResourceProvider):
    """Manages one file (plus its token file) on one host."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Reject relative paths and non-text content; pass everything else through."""
        failures = []
        path = news.get("path")
        if isinstance(path, str) and not path.startswith("/"):
            failures.append(CheckFailure("path", f"must be absolute, got {path!r}"))
        content = news.get("content")
        if not isinstance(content, str) and not _is_unknown(content):
            failures.append(CheckFailure("content", "must be a string"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Host or path changes replace the file; content or mode update it."""
        replaces = [k for k in _REPLACE_KEYS if olds.get(k) != news.get(k)]
        updates = [k for k in _UPDATE_KEYS if olds.get(k) != news.get(k)]
        return DiffResult(
            changes=bool(replaces or updates),
            replaces=replaces,
            delete_before_replace=True,
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Write both files; on failure remove whatever was written, then raise."""
        with open_connection(props["host"]) as conn:
            try:
                _write(conn, props)
            except BaseException:
                _remove(conn, props["path"])
                raise
        return CreateResult(f"{conn.host}:{props['path']}", _outputs(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-read the file, and whether its token file holds the ``token`` input; an
        empty id tells the engine it is gone."""
        with open_connection(props["host"]) as conn:
            content = conn.get(props["path"])
            stored = conn.get(token_path(props["path"]))
        if content is None:
            return ReadResult("", {})
        live = {**props, "content": content.decode()}
        token_ok = stored is not None and stored.decode() == plain(props.get("token"))
        return ReadResult(id_, {**_outputs(live), "token_ok": token_ok})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Rewrite both files in place (atomic puts)."""
        with open_connection(news["host"]) as conn:
            _write(conn, news)
        return UpdateResult(_outputs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove both files, given the token the file was written with (an input only);
        succeeds when they are already gone."""
        with open_connection(props["host"]) as conn:
            stored = conn.get(token_path(props["path"]))
            if stored is not None and stored.decode() != plain(props.get("token")):
                raise RemoteError(conn.host, f"refusing to delete {props['path']}: not its token")
            _remove(conn, props["path"])


def _write(conn: Connection, props: dict[str, Any]) -> None:
    path = props["path"]
    conn.put(path, props["content"].encode(), mode=int(props.get("mode", 0o644)))
    quoted = shlex.quote(token_path(path))
    conn.run(
        f"umask 077 && cat > {quoted}.new && mv {quoted}.new {quoted}",
        stdin=plain(props["token"]),
        timeout=COMMAND_TIMEOUT,
    )


def _remove(conn: Connection, path: str) -> None:
    quoted = " ".join(shlex.quote(p) for p in (path, token_path(path)))
    conn.run(f"rm -f {quoted}", timeout=COMMAND_TIMEOUT)


def _outputs(props: dict[str, Any]) -> dict[str, Any]:
    outs = {k: v for k, v in props.items() if k not in ("token", "resource_urn")}
    outs["sha256"] = hashlib.sha256(props["content"].encode()).hexdigest()
    outs["directory"] = posixpath.dirname(props["path"])
    return outs


def _is_unknown(value: Any) -> bool:
    from pulumi.output import Unknown

    return isinstance(value, Unknown)


_BARRIERS: dict[str, threading.Barrier] = {}
_BARRIERS_LOCK = threading.Lock()


class RendezvousProvider(ResourceProvider):
    """``create`` returns only once ``parties`` creates of the same ``group`` are running
    at the same time in the plugin (or fails after ``timeout_s``): it shows how many
    provider calls the plugin really runs at once."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        parties = int(props["parties"])
        with _BARRIERS_LOCK:
            barrier = _BARRIERS.setdefault(props["group"], threading.Barrier(parties))
        try:
            barrier.wait(timeout=float(props["timeout_s"]))
        except threading.BrokenBarrierError:
            raise RuntimeError(
                f"only {barrier.n_waiting} of {parties} creates ran at the same time"
            ) from None
        return CreateResult(id_=f"{props['group']}-{int(props['index'])}", outs={})


class FailingProvider(ResourceProvider):
    """``create`` raises ``props["error"]`` (an amdfleet error, or a plain RuntimeError)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        if props["error"] == "amdfleet":
            raise RemoteError("host7", "mkdir /opt/x failed", "check the disk")
        raise RuntimeError("an unexpected bug")


SAMPLE_PROVIDERS: dict[str, ResourceProvider] = {
    SAMPLE_FILE: SampleFileProvider(),
    RENDEZVOUS: RendezvousProvider(),
    FAILING: FailingProvider(),
}
"""Type token → provider, as tests/support/sample_plugin.py serves them."""
