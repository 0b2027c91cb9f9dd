"""The one seam through which amdfleet touches a host: the :class:`Connection` protocol.

Pulumi dynamic providers receive a connection (SSH via :mod:`amdfleet.remote.transport.ssh`, or the
local machine via :mod:`amdfleet.remote.transport.local`) and only ever call ``run``, ``put`` and
``get`` on it. Both implementations share the result record, the output bookkeeping and the
redaction rules defined here, so errors read the same whichever transport produced them.

Redaction: every string a caller declares secret (the connection's ``secrets``, a call's
``redact``, and the ``stdin`` text of that call) is replaced by ``***`` in any error text,
including the echoed command and the last lines of output, in the lines a ``run`` streams
to its ``on_output`` callback, and in the output a ``run`` returns (so an engine log read
back from a host never carries the key it was started with).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from amdfleet.errors import RemoteCommandError

REDACTED = "***"
TAIL_LINES = 20
# Lines of stdin shorter than this are not redacted one by one: they are too likely to
# match ordinary output ("1", "yes") and a secret that short is not a secret anyway.
_MIN_REDACT_LEN = 4
# A "line" streamed to on_output is cut here: a command printing binary data or endless
# carriage-return progress must not grow the buffer without bound.
_MAX_LINE_BYTES = 16384

OutputListener = Callable[[str], None]
"""Receives each complete line (``\\n`` or ``\\r`` ended, redacted, without the end) of a
running command's stdout and stderr, as it arrives. Must not raise."""


@dataclass(frozen=True)
class CommandResult:
    """What one command did on a host: its exit code and its output.

    ``output`` is stdout and stderr interleaved in the order they arrived, which is what a
    person reading a failure wants; ``stdout``/``stderr`` are the separate streams.
    """

    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    output: str = field(repr=False, default="")

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0

    def tail(self, n: int = TAIL_LINES) -> str:
        """The last ``n`` lines of the combined output (stdout and stderr)."""
        return tail_lines(self.output or self.stdout + self.stderr, n)


@runtime_checkable
class Connection(Protocol):
    """An open session to one host. Every method has a bounded duration.

    Implementations raise :class:`~amdfleet.errors.RemoteError` (or a subclass) for every
    failure; they never leak transport exceptions.
    """

    @property
    def host(self) -> str:
        """The host label used in every error message."""
        ...

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
        """Run ``command`` with ``sh -c`` semantics and wait at most ``timeout`` seconds.

        ``stdin`` is written to the command's standard input and then closed; pass secrets
        this way, never in the command text. With ``check`` a non-zero exit raises
        :class:`RemoteCommandError`; a timeout always raises it with ``exit_code=None``.
        Secrets (``redact``, ``stdin`` and the connection's own) are masked in errors and
        in the lines passed to ``on_output`` while the command runs (to report progress);
        the connection's own and ``redact`` are also masked in the returned output.
        """
        ...

    def put(self, remote_path: str, content: bytes, *, mode: int, timeout: float = 60.0) -> None:
        """Write ``content`` to ``remote_path`` atomically (temp file, chmod, rename).

        Missing parent directories are created. Readers never see a partial file.
        """
        ...

    def get(self, remote_path: str, *, timeout: float = 60.0) -> bytes | None:
        """Return the content of ``remote_path``, or None when it does not exist."""
        ...

    def close(self) -> None:
        """Release the session; idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Redactor:
    """Replaces known secret strings by ``***``; longest first so overlaps mask fully."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s}
        self._secrets = tuple(sorted(unique, key=len, reverse=True))

    def with_call(self, redact: Sequence[str], stdin: str | None) -> Redactor:
        """A redactor that also masks this call's ``redact`` strings and its stdin."""
        extra = list(redact)
        if stdin:
            extra.append(stdin)
            extra += [ln.strip() for ln in stdin.splitlines() if len(ln.strip()) >= _MIN_REDACT_LEN]
        return Redactor([*self._secrets, *extra]) if extra else self

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class OutputCollector:
    """Collects a command's stdout and stderr, keeping their arrival order for the tail.

    With ``on_line``, each complete line of either stream is also passed to it, redacted
    by ``redactor``, as soon as it has arrived. The finished :meth:`result` is redacted by
    ``returned``: the connection's secrets and the call's ``redact``, but not the lines
    of its stdin (a script sent as stdin must not blank words out of what it prints).
    """

    def __init__(
        self,
        on_line: OutputListener | None = None,
        redactor: Redactor | None = None,
        *,
        returned: Redactor | None = None,
    ) -> None:
        self._stdout: list[bytes] = []
        self._stderr: list[bytes] = []
        self._combined: list[bytes] = []
        self._on_line = on_line
        self._redactor = redactor or Redactor()
        self._returned = returned or Redactor()
        self._partial = {False: b"", True: b""}

    def add(self, chunk: bytes, *, stderr: bool = False) -> None:
        """Record one chunk read from stdout (or stderr)."""
        (self._stderr if stderr else self._stdout).append(chunk)
        self._combined.append(chunk)
        if self._on_line is not None:
            self._split(chunk, stderr)

    def result(self, host: str, command: str, exit_code: int) -> CommandResult:
        """The finished command's record, its output redacted."""
        redact = self._returned
        return CommandResult(
            host=host,
            command=command,
            exit_code=exit_code,
            stdout=redact(_decode(self._stdout)),
            stderr=redact(_decode(self._stderr)),
            output=redact(_decode(self._combined)),
        )

    def tail(self, n: int = TAIL_LINES) -> str:
        """The last lines received so far, redacted (used when a command times out)."""
        return tail_lines(self._redactor(_decode(self._combined)), n)

    def _split(self, chunk: bytes, stderr: bool) -> None:
        assert self._on_line is not None
        *lines, rest = (self._partial[stderr] + chunk).replace(b"\r", b"\n").split(b"\n")
        self._partial[stderr] = rest[-_MAX_LINE_BYTES:]
        for line in lines:
            if line.strip():
                self._on_line(self._redactor(line.decode("utf-8", errors="replace")))


def command_error(
    result: CommandResult | None,
    *,
    host: str,
    command: str,
    redactor: Redactor,
    output_tail: str = "",
    hint: str = "",
) -> RemoteCommandError:
    """Build the error for a failed (``result``) or timed-out (``result=None``) command."""
    exit_code = None if result is None else result.exit_code
    tail = result.tail() if result is not None else output_tail
    if not hint and result is None:
        hint = "raise the timeout if the command is legitimately slow, or check the host load"
    return RemoteCommandError(host, redactor(command), exit_code, redactor(tail), hint)


def tail_lines(text: str, n: int) -> str:
    """The last ``n`` lines of ``text`` (without a trailing newline)."""
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines[-n:]) if n > 0 else ""


def _decode(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")
