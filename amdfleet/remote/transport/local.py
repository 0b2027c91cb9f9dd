"""A :class:`~amdfleet.remote.transport.connection.Connection` to the machine running Pulumi.

Used for hosts declared with ``connection: local``. Commands run with ``/bin/sh -c`` in
their own process group, so a timeout kills the command and everything it started.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from amdfleet.errors import RemoteError
from amdfleet.remote.transport.connection import (
    CommandResult,
    OutputCollector,
    OutputListener,
    Redactor,
    command_error,
)

_READ_SIZE = 65536
_KILL_WAIT = 5.0


class LocalConnection:
    """Runs commands and writes files on this machine with the Connection contract."""

    def __init__(self, host: str = "local", *, secrets: Iterable[str] = ()) -> None:
        self._host = host
        self._redactor = Redactor(secrets)

    @property
    def host(self) -> str:
        """The host label used in error messages."""
        return self._host

    def run(
        self,
        command: str,
        *,
        timeout: float,
        check: bool = True,
        stdin: str | None = None,
        redact: Sequence[str] = (),
        on_output: OutputListener | None = None,
    ) -> CommandResult:
        """Run ``command`` under ``/bin/sh -c``; see :meth:`Connection.run`.

        Raises RemoteCommandError on a non-zero exit (with ``check``) or on timeout (the
        process group is killed first), RemoteError when the shell cannot start.
        """
        redactor = self._redactor.with_call(redact, stdin)
        proc = self._spawn(command, redactor, stdin is not None)
        returned = self._redactor.with_call(redact, None)
        collector = OutputCollector(on_output, redactor, returned=returned)
        try:
            finished = _pump(proc, stdin, collector, time.monotonic() + timeout)
        finally:
            if proc.returncode is None:
                _kill_group(proc)
            _close_pipes(proc)
        if not finished:
            raise command_error(
                None,
                host=self._host,
                command=command,
                redactor=redactor,
                output_tail=collector.tail(),
            )
        result = collector.result(self._host, command, proc.returncode)
        if check and not result.ok:
            raise command_error(result, host=self._host, command=command, redactor=redactor)
        return result

    def put(self, remote_path: str, content: bytes, *, mode: int, timeout: float = 60.0) -> None:
        """Write the file atomically (temp file in the same directory, chmod, rename).

        Raises RemoteError when the directory cannot be created or written.
        """
        path = Path(remote_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, content, mode)
        except OSError as e:
            raise RemoteError(
                self._host,
                f"cannot write {remote_path}: {e.strerror or e}",
                hint="check that the directory is writable by this user",
            ) from e

    def get(self, remote_path: str, *, timeout: float = 60.0) -> bytes | None:
        """Return the file content, or None if it does not exist."""
        try:
            return Path(remote_path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RemoteError(self._host, f"cannot read {remote_path}: {e.strerror or e}") from e

    def close(self) -> None:
        """Nothing to release for the local machine."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, command: str, redactor: Redactor, has_stdin: bool) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.PIPE if has_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise RemoteError(
                self._host, f"cannot start /bin/sh for: {redactor(command)}: {e}"
            ) from e


def _pump(
    proc: subprocess.Popen[bytes],
    stdin: str | None,
    collector: OutputCollector,
    deadline: float,
) -> bool:
    """Feed stdin and collect output until both pipes close and the process exits.

    Everything goes through one selector, so a command that neither reads its input nor
    stops writing cannot deadlock us. Returns False if the deadline passed first.
    """
    assert proc.stdout is not None and proc.stderr is not None
    pending = stdin.encode() if stdin is not None else b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, False)
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, True)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, None)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in sel.select(remaining):
                if key.data is None:
                    pending = _write_some(proc, pending, sel)
                else:
                    _read_some(key.fd, bool(key.data), sel, collector)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        return False
    return True


def _write_some(
    proc: subprocess.Popen[bytes], pending: bytes, sel: selectors.BaseSelector
) -> bytes:
    assert proc.stdin is not None
    try:
        written = os.write(proc.stdin.fileno(), pending) if pending else 0
    except BlockingIOError:
        return pending
    except BrokenPipeError:
        written = len(pending)  # the command exited without reading its input
    pending = pending[written:]
    if not pending:
        sel.unregister(proc.stdin.fileno())
        proc.stdin.close()
    return pending


def _read_some(
    fd: int,
    is_stderr: bool,
    sel: selectors.BaseSelector,
    collector: OutputCollector,
) -> None:
    chunk = os.read(fd, _READ_SIZE)
    if not chunk:
        sel.unregister(fd)
        return
    collector.add(chunk, stderr=is_stderr)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_WAIT)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()


def _write_atomic(path: Path, content: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
