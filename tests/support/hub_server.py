"""A small, real Hugging Face Hub for tests: one model repo served over HTTP.

Why it exists: the public hub (huggingface.co) is unreachable from this machine and from
CI, yet ModelWeights must be tested with the real ``huggingface_hub`` client running on a
real host. This server implements the documented subset of the Hub HTTP API that
``huggingface_hub.snapshot_download`` (2.x, as installed in the engine's environment)
talks to, so the client runs unchanged. The seam is ``HF_ENDPOINT``: the variable a user
sets to point the client at a hub mirror (amdfleet's ``weights.hub_endpoint``).

The repo is the files of a local directory at one fixed commit (a sha1 derived from the
file contents). What the client sees, as on the hub:

``GET /api/models/{repo}/revision/{rev}``
    Repo info: ``id``, ``sha`` (the commit), ``siblings`` (``rfilename``), ``gated``...
``GET /api/models/{repo}/tree/{rev}[/{dir}]?recursive=``
    The listing: ``type``, ``path``, ``oid`` (git blob id), ``size``, and ``lfs``
    (``oid`` = sha256, ``size``, ``pointerSize``) for LFS files.
``HEAD|GET /{repo}/resolve/{rev}/{path}``
    A regular file: 200 with ``X-Repo-Commit``, ``ETag`` (the git blob id),
    ``Content-Length``, ``Accept-Ranges``; ``Range`` gives 206 with ``Content-Range``.
    An LFS file (``*.safetensors``...): 302 with ``Location`` on the CDN,
    ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``.
``GET /api/agent-harnesses``
    The registry the client fetches (best effort) to tag its user agent; empty here.
``HEAD|GET /blobs/{sha256}?sig=...`` on the CDN listener
    The LFS content. The CDN is a second port, i.e. another origin, so the client drops
    ``Authorization`` when it follows the redirect, exactly as with the real CDN. URLs
    carry a per-server signature, so blobs are reachable only through the hub.

Errors carry ``X-Error-Code``/``X-Error-Message`` and a JSON ``{"error": ...}`` body, which
the client turns into its typed errors: an unknown repo is 401 ``RepoNotFound``, an unknown
revision 404 ``RevisionNotFound``, a missing file 404 ``EntryNotFound``. A gated repo
(``token`` set) lists its metadata publicly, like the hub, but refuses file downloads
with 401 ``GatedRepo`` without a bearer token and 403 ``GatedRepo`` with another token.

For tests: :attr:`HubServer.log` records every request (client address, method, path,
``Authorization``, ``Range``, status, repo file), :meth:`HubServer.drop_at` makes the
server cut the connection after a given byte of a file (a broken download) and
:meth:`HubServer.hold_at` stalls it there (a hung one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5")
IDLE_TIMEOUT = 30.0
HOLD_LIMIT = 120.0
_CHUNK = 64 * 1024
_LAST_MODIFIED = "2025-01-01T00:00:00.000Z"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class HubFile:
    """One file of the served repo (content read from ``source`` on demand)."""

    path: str
    source: Path
    size: int
    oid: str
    sha256: str
    lfs: bool

    @property
    def pointer_size(self) -> int:
        """Size of the git-lfs pointer file that git would store for this file."""
        return len(_lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class HubRequest:
    """One request the server answered: ``file`` is the repo path the response was about,
    ``cut`` whether the server dropped the connection mid-body (see ``drop_at``)."""

    listener: str
    client: str
    method: str
    path: str
    authorization: str | None
    range: str | None
    status: int
    file: str | None = None
    cut: bool = False


@dataclass
class _Fault:
    action: str  # "drop" or "hold"
    path: str
    offset: int
    remaining: int | None


class HubServer:
    """The hub (and its CDN) serving ``repo`` from ``directory``; close it (or ``with``)."""

    def __init__(
        self,
        directory: Path,
        repo: str,
        *,
        address: str = "127.0.0.1",
        token: str | None = None,
        revisions: tuple[str, ...] = ("main",),
    ) -> None:
        self.repo = repo
        self.token = token
        self.revisions = revisions
        self.files = _scan(directory)
        self.commit = _commit_of(self.files.values())
        self._by_sha = {f.sha256: f for f in self.files.values() if f.lfs}
        self._signature = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._log: list[HubRequest] = []
        self._faults: list[_Fault] = []
        self._released = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hub = _Listener(self, "hub", address)
        try:
            self._cdn = _Listener(self, "cdn", address)
        except BaseException:
            self._hub.server_close()
            raise

    @classmethod
    def start(cls, directory: Path, repo: str, **kwargs: Any) -> HubServer:
        """Serve ``directory`` as ``repo``; returns once both listeners accept connections."""
        server = cls(directory, repo, **kwargs)
        for listener in (server._hub, server._cdn):
            thread = threading.Thread(
                target=listener.serve_forever, name=f"hub-{listener.name}", daemon=True
            )
            listener.serving = True  # from now on stop() must (and may) call shutdown()
            thread.start()
            server._threads.append(thread)
        return server

    @property
    def endpoint(self) -> str:
        """The hub's base URL: what ``HF_ENDPOINT`` is set to."""
        return self._hub.url

    @property
    def cdn(self) -> str:
        """The CDN's base URL (another origin than the hub)."""
        return self._cdn.url

    # -- test controls -----------------------------------------------------------------

    @property
    def log(self) -> list[HubRequest]:
        """Every request answered so far, in order."""
        with self._lock:
            return list(self._log)

    def downloads(self, client: str | None = None) -> list[str]:
        """Repo paths whose content was sent in full (a GET of a body, not cut), optionally
        only those sent to ``client``."""
        return [
            r.file
            for r in self.log
            if r.method == "GET" and r.file and r.status in (200, 206) and not r.cut
            if client is None or r.client == client
        ]

    def clear_log(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self._log.clear()

    def drop_at(self, path: str, offset: int, *, times: int | None = None) -> None:
        """Cut the connection once ``offset`` bytes of ``path`` were sent (on every GET
        that reaches that byte, or on the next ``times`` ones); a resumed GET starting at
        or past ``offset`` is cut before its first byte."""
        self._add_fault("drop", path, offset, times)

    def hold_at(self, path: str, offset: int, *, times: int | None = None) -> None:
        """Stall GETs of ``path`` after ``offset`` bytes (a hung transfer) until
        :meth:`release` (or :meth:`close`, or ``HOLD_LIMIT`` seconds)."""
        self._add_fault("hold", path, offset, times)

    def release(self) -> None:
        """Let held transfers go on (and every later one pass a hold at once)."""
        self._released.set()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop both listeners, cut open connections and join every server thread."""
        self.release()
        for listener in (self._hub, self._cdn):
            listener.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- used by the handler -----------------------------------------------------------

    def record(self, request: HubRequest) -> None:
        with self._lock:
            self._log.append(request)

    def fault_for(self, path: str) -> _Fault | None:
        """The fault to apply to a GET of ``path`` (consuming one use), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.path == path and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def wait_released(self) -> None:
        self._released.wait(HOLD_LIMIT)

    def _add_fault(self, action: str, path: str, offset: int, times: int | None) -> None:
        if path not in self.files or not 0 <= offset < self.files[path].size:
            raise ValueError(f"no byte {offset} in {path!r}")
        with self._lock:
            self._faults.append(_Fault(action, path, offset, times))

    def cdn_url(self, f: HubFile) -> str:
        return f"{self.cdn}/blobs/{f.sha256}?sig={self._signature}"

    def signed(self, query: str) -> bool:
        return parse_qs(query).get("sig") == [self._signature]

    def blob(self, sha256: str) -> HubFile | None:
        return self._by_sha.get(sha256)

    def resolves(self, revision: str) -> bool:
        return revision == self.commit or revision in self.revisions


class _Listener(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, hub: HubServer, name: str, address: str) -> None:
        super().__init__((address, 0), _Handler)
        self.hub = hub
        self.name = name
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()
        self.serving = False

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._guard:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._guard:
            self._connections.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        if self.serving:
            self.shutdown()  # returns once serve_forever has returned
        with self._guard:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.server_close()  # joins the handler threads (block_on_close)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "amdfleet-test-hub"
    timeout = IDLE_TIMEOUT
    server: _Listener

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is self.server.hub.log

    # -- routing -----------------------------------------------------------------------

    def _dispatch(self, *, body: bool) -> None:
        self._status = 0
        self._file: str | None = None
        self._cut = False
        try:
            self._route(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-response
        finally:
            self.server.hub.record(
                HubRequest(
                    listener=self.server.name,
                    client=self.client_address[0],
                    method=self.command,
                    path=self.path,
                    authorization=self.headers.get("Authorization"),
                    range=self.headers.get("Range"),
                    status=self._status,
                    file=self._file,
                    cut=self._cut,
                )
            )

    def _route(self, body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        if self.server.name == "cdn":
            self._cdn(path, url.query, body)
        elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
            self._repo_info(m[1], m[2])
        elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.+))?", path):
            recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
            self._tree(m[1], m[2], m[3] or "", recursive)
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(m[1], m[2], m[3], body)
        elif path == "/api/agent-harnesses":
            self._json(200, {"standardEnvVars": [], "harnesses": {}})
        else:
            self._error(404, "", "Not Found")

    def _repo_info(self, repo: str, revision: str) -> int:
        hub = self.server.hub
        if (status := self._check_repo(repo, revision)) is not None:
            return status
        org = repo.split("/")[0]
        info = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": org,
            "sha": hub.commit,
            "lastModified": _LAST_MODIFIED,
            "createdAt": _LAST_MODIFIED,
            "private": False,
            "gated": "manual" if hub.token else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": [{"rfilename": p} for p in sorted(hub.files)],
            "usedStorage": sum(f.size for f in hub.files.values()),
        }
        return self._json(200, info)

    def _tree(self, repo: str, revision: str, folder: str, recursive: bool) -> int:
        hub = self.server.hub
        if (status := self._check_repo(repo, revision)) is not None:
            return status
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for f in hub.files.values():
            if not f.path.startswith(prefix):
                continue
            parts = f.path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                folder_path = prefix + "/".join(parts[:depth])
                tree_id = hashlib.sha1(folder_path.encode()).hexdigest()
                entries[folder_path] = {"type": "directory", "oid": tree_id, "path": folder_path}
            if recursive or len(parts) == 1:
                entries[f.path] = _tree_entry(f)
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        return self._json(200, [entries[k] for k in sorted(entries)])

    def _resolve(self, repo: str, revision: str, path: str, body: bool) -> int:
        hub = self.server.hub
        if (status := self._check_repo(repo, revision)) is not None:
            return status
        if (status := self._check_token(repo)) is not None:
            return status
        f = hub.files.get(path)
        if f is None:
            headers = {"X-Repo-Commit": hub.commit}
            return self._error(404, "EntryNotFound", "Entry not found", headers)
        self._file = f.path
        if f.lfs:
            headers = {
                "Location": hub.cdn_url(f),
                "X-Repo-Commit": hub.commit,
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
            }
            return self._send(302, b"", headers)
        return self._content(f, {"X-Repo-Commit": hub.commit, "ETag": f'"{f.oid}"'}, body)

    def _cdn(self, path: str, query: str, body: bool) -> int:
        hub = self.server.hub
        m = re.fullmatch(r"/blobs/([0-9a-f]{64})", path)
        f = hub.blob(m[1]) if m else None
        if f is None or not hub.signed(query):
            return self._send(403, b"AccessDenied: request signature does not match\n", {})
        self._file = f.path
        return self._content(f, {"ETag": f'"{f.sha256}"'}, body)

    # -- checks ------------------------------------------------------------------------

    def _check_repo(self, repo: str, revision: str) -> int | None:
        hub = self.server.hub
        if repo != hub.repo:
            return self._error(401, "RepoNotFound", "Repository not found")
        if not hub.resolves(revision):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return None

    def _check_token(self, repo: str) -> int | None:
        token = self.server.hub.token
        if token is None:
            return None
        sent = self.headers.get("Authorization", "")
        if sent == f"Bearer {token}":
            return None
        if not sent:
            message = (
                f"Access to model {repo} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            return self._error(401, "GatedRepo", message)
        message = (
            f"Access to model {repo} is restricted and you are not in the authorized list. "
            f"Visit {self.server.hub.endpoint}/{repo} to ask for access."
        )
        return self._error(403, "GatedRepo", message)

    # -- responses ---------------------------------------------------------------------

    def _content(self, f: HubFile, headers: dict[str, str], body: bool) -> int:
        start, end = 0, f.size - 1
        status = 200
        if (wanted := self.headers.get("Range")) and body:
            span = _parse_range(wanted, f.size)
            if span is None:
                return self._send(416, b"", {"Content-Range": f"bytes */{f.size}"})
            start, end = span
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{f.size}"}
        headers = {
            **headers,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start + 1),
        }
        self._head(status, headers)
        if not body:
            return status
        fault = self.server.hub.fault_for(f.path)
        stop = end + 1 if fault is None else max(start, min(fault.offset, end + 1))
        for chunk in _read(f.source, start, stop):
            self.wfile.write(chunk)
        if fault is None or stop > end:
            return status
        if fault.action == "drop":
            self._drop()
            return status
        self.server.hub.wait_released()
        for chunk in _read(f.source, stop, end + 1):
            self.wfile.write(chunk)
        return status

    def _json(self, status: int, data: Any) -> int:
        return self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> int:
        extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        body = json.dumps({"error": message}).encode()
        return self._send(
            status, body, {"Content-Type": "application/json", **extra, **(headers or {})}
        )

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> int:
        self._head(status, {**headers, "Content-Length": str(len(payload))})
        if self.command != "HEAD":
            self.wfile.write(payload)
        return status

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _drop(self) -> None:
        """Reset the connection mid-body (no orderly end of the response)."""
        self._cut = True
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _scan(directory: Path) -> dict[str, HubFile]:
    files = {}
    for source in sorted(p for p in directory.rglob("*") if p.is_file()):
        path = source.relative_to(directory).as_posix()
        data = source.read_bytes()
        files[path] = HubFile(
            path=path,
            source=source,
            size=len(data),
            oid=_git_blob_id(data),
            sha256=hashlib.sha256(data).hexdigest(),
            lfs=path.endswith(LFS_SUFFIXES),
        )
    if not files:
        raise ValueError(f"no files to serve in {directory}")
    return files


def _commit_of(files: Iterable[HubFile]) -> str:
    """A stable 40-hex commit id for the files' paths and contents."""
    digest = hashlib.sha1()
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.oid}\n".encode())
    return digest.hexdigest()


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _tree_entry(f: HubFile) -> dict[str, Any]:
    if not f.lfs:
        return {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
    pointer = _lfs_pointer(f.sha256, f.size)
    lfs = {"oid": f.sha256, "size": f.size, "pointerSize": len(pointer)}
    return {
        "type": "file",
        "oid": _git_blob_id(pointer),
        "size": f.size,
        "path": f.path,
        "lfs": lfs,
    }


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:
        length = int(m[2])
        return (max(size - length, 0), size - 1) if length > 0 else None
    start = int(m[1])
    end = min(int(m[2]), size - 1) if m[2] else size - 1
    return (start, end) if start <= end else None


def _read(source: Path, start: int, stop: int) -> Iterator[bytes]:
    with open(source, "rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
