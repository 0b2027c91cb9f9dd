"""SSH connections with pinned host keys: the only module that imports paramiko.

Security rules, all enforced here:

* The host key is pinned in the stack (``HostTarget.host_key``), either as a public-key
  line (``ssh-ed25519 AAAA...``) or as an OpenSSH fingerprint (``SHA256:...``). A host
  presenting any other key is refused with :class:`HostKeyMismatchError`. Unknown keys are
  never accepted and ``~/.ssh/known_hosts`` is never read.
* The private key is read from ``key_path`` inside :func:`connect` and is referenced by no
  object this module returns; :class:`SshConnection` refuses to be pickled.
* Every step is bounded: TCP connect, banner, key exchange, authentication, channel
  opening, command execution and SFTP transfers each have a deadline.

Connecting retries what may pass by itself -- a refused or timed-out TCP connect, "no
route to host", a connection closed before the SSH banner (an sshd still starting) --
with exponential backoff, within the attempts and time of a :class:`ConnectRetry`. A
wrong host key, a rejected or unreadable client key fail at once.

Usage::

    target = HostTarget(name="node-1", address="10.0.0.5", key_path="~/.ssh/id_ed25519",
                        host_key="ssh-ed25519 AAAAC3Nz...")
    with connect(target, timeout=10) as conn:
        conn.run("hostname", timeout=10).stdout
"""

from __future__ import annotations

import contextlib
import errno
import math
import posixpath
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import paramiko
import tenacity
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE

from amdfleet.errors import HostKeyMismatchError, HostUnreachableError, RemoteError
from amdfleet.hostkeys import PinnedKey, fingerprint_of, parse_host_key
from amdfleet.remote.connection import (
    CommandResult,
    OutputCollector,
    OutputListener,
    Redactor,
    command_error,
)
from amdfleet.remote.target import HostTarget

DEFAULT_CONNECT_TIMEOUT = 10.0
_READ_SIZE = 65536
_POLL = 0.5
# Host-key algorithms to offer first when the pinned key has this type (RSA keys are
# negotiated under their signature-algorithm names).
_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


@dataclass(frozen=True)
class ConnectRetry:
    """How :func:`connect` retries a host that does not answer yet.

    Retried: a refused or timed-out TCP connect, "no route to host" (no ARP answer: a
    host down or rebooting), and a connection reset or closed before the SSH banner (an
    sshd still starting, or over its ``MaxStartups``). Never retried:
    a host-key mismatch, a missing or malformed pin, an unreadable client key, a rejected
    login, or any other handshake failure -- those do not pass by waiting.

    The wait before attempt ``n + 1`` is ``first_wait * 2 ** (n - 1)`` seconds, at most
    ``max_wait``. No attempt starts later than ``within`` seconds after the first one,
    and each attempt's TCP connect waits at most ``timeout``, cut to the time left: a
    host that does not answer fails within ``within`` seconds plus, at worst, one SSH
    handshake (a host that accepts but stalls the banner is bounded by ``timeout``).
    """

    attempts: int = 5
    within: float = 30.0
    first_wait: float = 0.5
    max_wait: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.within <= 0 or self.first_wait < 0 or self.max_wait < 0:
            raise ValueError(f"invalid connect retry policy: {self}")


DEFAULT_RETRY = ConnectRetry()
NO_RETRY = ConnectRetry(attempts=1, within=math.inf)
"""One attempt, with the full ``timeout``."""

RetryListener = Callable[[int, HostUnreachableError], None]
"""Called as ``on_retry(attempt, error)`` when attempt number ``attempt`` failed with the
transient ``error`` and another attempt follows (after the backoff wait)."""


def connect(
    target: HostTarget,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    secrets: Iterable[str] = (),
    retry: ConnectRetry = DEFAULT_RETRY,
    on_retry: RetryListener | None = None,
) -> SshConnection:
    """Open an authenticated SSH session to ``target``, checking its pinned host key.

    ``timeout`` bounds each step (TCP connect, banner, key exchange, authentication).
    ``secrets`` are masked as ``***`` in every error the connection raises later.
    A host that refuses, times out, has no route or drops the connection before the SSH
    banner is retried as ``retry`` says (see :class:`ConnectRetry`); ``on_retry`` hears each
    failed attempt that is followed by another.

    Raises HostUnreachableError (naming the attempts made, over how long, and the last
    cause) once the retries are used up, HostKeyMismatchError when the host presents
    another key than the pinned one, RemoteError when the pin or client key is unusable,
    the port is not an SSH server, or the host rejects the key.
    """
    pin = _pin_of(target)
    pkey = _load_private_key(target)
    deadline = time.monotonic() + retry.within
    attempt = _retrying(retry, on_retry)
    transport = attempt(_open_transport, target, pin, timeout, deadline)
    try:
        _authenticate(transport, target, pkey, timeout)
    except BaseException:
        transport.close()
        raise
    return SshConnection(target, transport, Redactor(secrets))


def first_seen_host_key(
    target: HostTarget,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    retry: ConnectRetry = DEFAULT_RETRY,
    on_retry: RetryListener | None = None,
) -> str:
    """The public key line (``ssh-ed25519 AAAA...``) ``target`` presents in an SSH
    handshake, without logging in and *without checking it against anything*: trust on
    first use, for a host whose key cannot be pinned before it boots. The caller pins the
    result and connects with :func:`connect`. Retries as :func:`connect` does.

    Raises HostUnreachableError once the retries are used up, RemoteError when the port
    is not an SSH server.
    """
    deadline = time.monotonic() + retry.within
    attempt = _retrying(retry, on_retry)
    transport = attempt(_open_transport, target, None, timeout, deadline)
    try:
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        transport.close()


def public_key_from_private(path: Path) -> str:
    """The public key line of the OpenSSH private key at ``path`` (the key's type and
    base64 blob). Raises ValueError naming the path and the problem, never key material.
    """
    try:
        key = paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise ValueError(f"private key {path} is encrypted") from None
    except OSError as e:
        raise ValueError(f"cannot read private key {path}: {e.strerror or e}") from None
    except (paramiko.SSHException, ValueError):
        raise ValueError(f"{path} is not an OpenSSH private key") from None
    return f"{key.get_name()} {key.get_base64()}"


class SshConnection:
    """An authenticated SSH session; each ``run`` opens a channel on it.

    Safe to share between threads (paramiko multiplexes channels). Not picklable: build
    it inside provider methods, never store it on a provider.
    """

    def __init__(self, target: HostTarget, transport: paramiko.Transport, redactor: Redactor):
        self._target = target
        self._transport = transport
        self._redactor = redactor

    @property
    def host(self) -> str:
        """The host label used in error messages."""
        return self._target.name

    @property
    def target(self) -> HostTarget:
        """Where this session is connected."""
        return self._target

    @property
    def is_active(self) -> bool:
        """False once the session has been closed or the connection dropped."""
        return bool(self._transport.is_active())

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
        """Run ``command`` on the host; see :meth:`Connection.run`.

        Raises RemoteCommandError on a non-zero exit (with ``check``) or when ``timeout``
        passes (``exit_code=None``; the remote command may keep running), RemoteError
        when the connection drops. A command killed by a signal has ``exit_code == -1``.
        """
        redactor = self._redactor.with_call(redact, stdin)
        deadline = time.monotonic() + timeout
        returned = self._redactor.with_call(redact, None)
        collector = OutputCollector(on_output, redactor, returned=returned)
        channel = self._open_channel(deadline, redactor, command)
        with _watchdog(deadline, channel.close) as fired:
            try:
                exit_code = _exec(channel, command, stdin, collector, deadline)
            except (paramiko.SSHException, OSError, EOFError) as e:
                if not fired.is_set():
                    self._lost(redactor(command), e)
                exit_code = None
            finally:
                channel.close()
        # The watchdog closing the channel makes a pending exit status read as -1.
        if exit_code is None or (exit_code == -1 and fired.is_set()):
            raise command_error(
                None,
                host=self.host,
                command=command,
                redactor=redactor,
                output_tail=collector.tail(),
            )
        if exit_code == -1 and not self.is_active:
            self._lost(redactor(command), None)
        result = collector.result(self.host, command, exit_code)
        if check and not result.ok:
            raise command_error(result, host=self.host, command=command, redactor=redactor)
        return result

    def put(self, remote_path: str, content: bytes, *, mode: int, timeout: float = 60.0) -> None:
        """Write ``content`` atomically over SFTP (temp file created 0600, chmod to
        ``mode``, posix-rename): a secret is never readable by others, even for a moment.

        Missing parent directories are created (mode 0755). Raises RemoteError on any
        failure or timeout; a failed put leaves no temp file behind when it can help it.
        """
        deadline = time.monotonic() + timeout
        with self._sftp(deadline, f"write {remote_path}") as sftp:
            _sftp_makedirs(sftp, posixpath.dirname(remote_path))
            _sftp_write_atomic(sftp, remote_path, content, mode)

    def get(self, remote_path: str, *, timeout: float = 60.0) -> bytes | None:
        """Read a file over SFTP; None when it does not exist. Raises RemoteError."""
        deadline = time.monotonic() + timeout
        with self._sftp(deadline, f"read {remote_path}") as sftp:
            try:
                with sftp.open(remote_path, "rb") as f:
                    f.prefetch()
                    return bytes(f.read())
            except FileNotFoundError:
                return None

    def close(self) -> None:
        """Close the session; idempotent."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "an SshConnection cannot be pickled: open it inside the provider method "
            "that needs it (dynamic providers are pickled with their attributes)"
        )

    def _open_channel(self, deadline: float, redactor: Redactor, command: str) -> paramiko.Channel:
        try:
            return self._transport.open_session(timeout=_remaining(deadline))
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._lost(redactor(command), e)

    @contextlib.contextmanager
    def _sftp(self, deadline: float, what: str) -> Iterator[paramiko.SFTPClient]:
        channel: paramiko.Channel | None = None
        fired = threading.Event()
        try:
            channel = self._transport.open_session(timeout=_remaining(deadline))
            with _watchdog(deadline, channel.close) as fired:
                channel.settimeout(_remaining(deadline))
                channel.invoke_subsystem("sftp")
                yield paramiko.SFTPClient(channel)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._sftp_failed(what, e, timed_out=fired.is_set())
        finally:
            if channel is not None:
                channel.close()

    def _sftp_failed(self, what: str, e: BaseException, *, timed_out: bool) -> NoReturn:
        if timed_out or isinstance(e, TimeoutError):
            raise RemoteError(
                self.host,
                f"timed out trying to {what}",
                hint="raise the timeout for large files, or check the host and network",
            ) from e
        if not self.is_active:
            self._lost(what, e)
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise RemoteError(
            self.host,
            f"cannot {what}: {reason}",
            hint=f"check that user {self._target.user!r} may write there and the disk is not full",
        ) from e

    def _lost(self, doing: str, cause: BaseException | None) -> NoReturn:
        raise RemoteError(
            self.host,
            f"connection to {self._target.ssh_address} lost while running: {doing}",
            hint="the host crashed, rebooted or the network dropped; once it answers SSH "
            "again, run the Pulumi command again (amdfleet does not rerun a command whose "
            "connection was lost)",
        ) from cause


def _exec(
    channel: paramiko.Channel,
    command: str,
    stdin: str | None,
    collector: OutputCollector,
    deadline: float,
) -> int | None:
    """Execute on an open channel; the exit status, or None when the deadline passed."""
    channel.exec_command(command)
    _send_stdin(channel, stdin.encode() if stdin is not None else b"")
    if not _drain(channel, collector, deadline):
        return None
    if not channel.status_event.wait(_remaining(deadline)):
        return None
    return int(channel.recv_exit_status())


def _send_stdin(channel: paramiko.Channel, data: bytes) -> None:
    """Send stdin then EOF; a command that exits without reading it is not an error."""
    try:
        if data:
            channel.sendall(data)
        _send_eof(channel)
    except (OSError, paramiko.SSHException):
        if not (channel.closed or channel.eof_received or channel.exit_status_ready()):
            raise


def _send_eof(channel: paramiko.Channel, *, patience: float = 30.0) -> None:
    """Send EOF on ``channel`` so that it can never follow the channel's CLOSE.

    paramiko's ``shutdown_write`` builds the EOF under the channel lock but sends it
    after releasing it. When the command has already exited, the transport thread can
    answer the server's CLOSE in between; OpenSSH then receives an EOF for a channel it
    has freed and drops the whole connection ("ieof packet referred to nonexistent
    channel"), killing every other command on the session. Here the EOF is built and
    sent while holding the transport's send lock, which the transport thread needs to
    send the CLOSE: either the EOF goes first, or the CLOSE was built first and already
    counts as our EOF (then nothing is sent). The transport thread never holds the send
    lock while waiting for a channel lock, so this cannot deadlock.
    """
    transport = channel.get_transport()
    send_lock = getattr(transport, "clear_to_send_lock", None)
    if transport is None or send_lock is None:  # another paramiko: its own method
        channel.shutdown_write()
        return
    give_up = time.monotonic() + patience
    while True:  # as Transport._send_user_message: wait out a key exchange
        transport.clear_to_send.wait(0.1)
        if not transport.is_active():
            raise EOFError("the SSH transport is closed")
        with send_lock:
            if transport.clear_to_send.is_set():
                with channel.lock:
                    message = None if channel.closed else channel._send_eof()  # type: ignore[attr-defined]
                if message is not None:
                    transport._send_message(message)  # type: ignore[attr-defined]
                return
        if time.monotonic() > give_up:
            raise paramiko.SSHException("key exchange did not finish; cannot send EOF")


def _drain(channel: paramiko.Channel, collector: OutputCollector, deadline: float) -> bool:
    """Read stdout/stderr until the remote side closes them. False on deadline."""
    fd = channel.fileno()
    while True:
        _read_ready(channel, collector)
        if channel.eof_received or channel.closed:
            _read_ready(channel, collector)
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        select.select([fd], [], [], min(remaining, _POLL))


def _read_ready(channel: paramiko.Channel, collector: OutputCollector) -> None:
    while channel.recv_ready():
        collector.add(channel.recv(_READ_SIZE))
    while channel.recv_stderr_ready():
        collector.add(channel.recv_stderr(_READ_SIZE), stderr=True)


@contextlib.contextmanager
def _watchdog(deadline: float, on_expiry: Any) -> Iterator[threading.Event]:
    """Call ``on_expiry`` (closing a channel) if the block outlives ``deadline``.

    paramiko waits without a timeout in a few places (exec and subsystem requests);
    closing the channel from another thread is what unblocks them.
    """
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        on_expiry()

    timer = threading.Timer(_remaining(deadline), expire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _sftp_makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    if directory in ("", "/", "."):
        return
    try:
        sftp.stat(directory)
        return
    except FileNotFoundError:
        pass
    _sftp_makedirs(sftp, posixpath.dirname(directory))
    try:
        sftp.mkdir(directory, 0o755)
    except OSError:
        sftp.stat(directory)  # created meanwhile by someone else: fine; otherwise re-raise


def _sftp_write_atomic(sftp: paramiko.SFTPClient, path: str, content: bytes, mode: int) -> None:
    directory, name = posixpath.split(path)
    tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with sftp_create_private(sftp, tmp) as f:
            f.set_pipelined(True)
            f.write(content)
        sftp.chmod(tmp, mode)
        sftp.posix_rename(tmp, path)
    except BaseException:
        _sftp_remove_quietly(sftp, tmp)
        raise


def sftp_create_private(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPFile:
    """Create ``path`` for writing, mode 0600 from the start (never wider, whatever the
    server's umask), failing if it exists.

    ``SFTPClient.open`` sends no attributes, so the server creates the file 0666 minus
    its umask and a later chmod leaves a window in which a secret is world-readable;
    here the OPEN request itself carries the permissions (OpenSSH passes them to
    ``open(2)``).
    """
    attrs = paramiko.SFTPAttributes()
    attrs.st_mode = 0o600
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
    request: Callable[..., tuple[int, paramiko.Message]] = sftp._request  # type: ignore[attr-defined]
    kind, msg = request(CMD_OPEN, path, flags, attrs)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError(f"expected a handle opening {path}")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "wb")


def _sftp_remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
        sftp.remove(path)


def _pin_of(target: HostTarget) -> PinnedKey:
    if not target.host_key:
        raise RemoteError(
            target.name,
            "no pinned host key: refusing to connect to an unverified host",
            hint=_keyscan_hint(target, None),
        )
    try:
        return parse_host_key(target.host_key)
    except ValueError as e:
        raise RemoteError(target.name, str(e), hint=_keyscan_hint(target, None)) from e


def _load_private_key(target: HostTarget) -> paramiko.PKey:
    path = Path(target.key_path).expanduser()
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as e:
        hint = "use an unencrypted deploy key (agents and passphrases are not supported)"
        raise RemoteError(target.name, f"private key {path} is encrypted", hint=hint) from e
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise RemoteError(
            target.name,
            f"cannot load private key {path}: {e}",
            hint="key_path must name an OpenSSH private key (ssh-keygen -t ed25519)",
        ) from e


def _retrying(retry: ConnectRetry, on_retry: RetryListener | None) -> tenacity.Retrying:
    """The one retry policy of :func:`connect`: HostUnreachableError is retried with
    exponential backoff until ``retry.attempts`` are made or the next attempt would start
    after ``retry.within`` seconds; then the last error is raised again, naming the
    attempts made and the time they took. Any other error ends the retries at once."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, _failure(state))

    def give_up(state: tenacity.RetryCallState) -> NoReturn:
        last = _failure(state)
        raise HostUnreachableError(
            last.host,
            last.reason,
            last.hint,
            attempts=state.attempt_number,
            elapsed=state.seconds_since_start,
        ) from last

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(HostUnreachableError),
        wait=tenacity.wait_exponential(multiplier=retry.first_wait, max=retry.max_wait),
        stop=tenacity.stop_after_attempt(retry.attempts) | tenacity.stop_before_delay(retry.within),
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )


def _failure(state: tenacity.RetryCallState) -> HostUnreachableError:
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, HostUnreachableError)  # the only error that is retried
    return error


def _open_transport(
    target: HostTarget, pin: PinnedKey | None, timeout: float, deadline: float
) -> paramiko.Transport:
    """One connect attempt: TCP connect (cut to the retry window), SSH handshake and
    host-key check (none without a pin: :func:`first_seen_host_key`); no login yet."""
    sock = _open_socket(target, min(timeout, _remaining(deadline)))
    transport = paramiko.Transport(sock)
    try:
        _handshake(transport, target, pin, timeout)
    except BaseException:
        transport.close()
        raise
    return transport


def _open_socket(target: HostTarget, timeout: float) -> socket.socket:
    where = target.ssh_address
    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
    except TimeoutError as e:
        raise HostUnreachableError(
            target.name,
            f"connecting to {where} timed out after {timeout:.3g}s",
            hint="the host is down or unreachable (network partition, firewall, wrong address)",
        ) from e
    except ConnectionRefusedError as e:
        raise HostUnreachableError(
            target.name,
            f"connection to {where} refused",
            hint="sshd is not running on the host, or the port is wrong; if the host is "
            f"still booting, run the Pulumi command again once `{_keyscan(target)}` answers",
        ) from e
    except ConnectionResetError as e:  # accepted, then reset before connect() returned
        raise _closed_before_banner_error(target, e) from e
    except OSError as e:
        if e.errno == errno.EHOSTUNREACH:  # no ARP answer: down or rebooting, like a timeout
            raise HostUnreachableError(
                target.name,
                f"cannot connect to {where}: {e.strerror}",
                hint="the host is down or rebooting, or the address is wrong",
            ) from e
        raise RemoteError(
            target.name,
            f"cannot connect to {where}: {e.strerror or e}",
            hint="check the address, the route to the host and that it is up",
        ) from e
    sock.settimeout(timeout)
    # SSH sends many small packets; with Nagle + delayed ACK each channel open costs ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _handshake(
    transport: paramiko.Transport, target: HostTarget, pin: PinnedKey | None, timeout: float
) -> None:
    """The SSH handshake, then the host-key check against ``pin``; without a pin (trust
    on first use) the host's ed25519 key is asked for and not checked."""
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = timeout
    transport.channel_timeout = timeout
    key_type = pin.key_type if pin is not None else "ssh-ed25519"
    if key_type:
        _prefer_key_type(transport, key_type)
    where = target.ssh_address
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as e:
        if _closed_before_banner(transport, e):
            raise _closed_before_banner_error(target, e) from e
        raise RemoteError(
            target.name,
            f"SSH handshake with {where} failed: {e or type(e).__name__}",
            hint="is this port an SSH server? the host may also be overloaded or dropping packets",
        ) from e
    if pin is not None:
        _verify_host_key(transport, target, pin)


def _closed_before_banner_error(target: HostTarget, cause: BaseException) -> HostUnreachableError:
    how = "reset" if isinstance(cause.__context__ or cause, ConnectionResetError) else "closed"
    return HostUnreachableError(
        target.name,
        f"{target.ssh_address} {how} the connection before sending the SSH banner",
        hint="sshd on the host is still starting or is refusing new connections "
        f"(MaxStartups); run the Pulumi command again once `{_keyscan(target)}` "
        "answers, and read sshd's log on the host if it keeps happening",
    )


def _closed_before_banner(transport: paramiko.Transport, error: BaseException) -> bool:
    """Whether the server reset or closed the connection before its SSH banner arrived.

    paramiko reports that as an EOFError (sending its own banner failed) or as an
    SSHException whose context is the EOFError or reset (reading the server's failed).
    A banner that never comes (a timeout) or is not SSH is not this case.
    """
    if transport.remote_version:  # the banner was read: the failure came later
        return False
    cause = error.__context__ if isinstance(error, paramiko.SSHException) else error
    return isinstance(cause, EOFError | ConnectionResetError | BrokenPipeError)


def _prefer_key_type(transport: paramiko.Transport, key_type: str) -> None:
    options = transport.get_security_options()
    wanted = _KEY_ALGORITHMS.get(key_type, (key_type,))
    supported = tuple(options.key_types)
    first = tuple(k for k in wanted if k in supported)
    options.key_types = first + tuple(k for k in supported if k not in first)


def _verify_host_key(transport: paramiko.Transport, target: HostTarget, pin: PinnedKey) -> None:
    key = transport.get_remote_server_key()
    presented = fingerprint_of(key.asbytes())
    if presented == pin.fingerprint:
        return
    raise HostKeyMismatchError(
        target.name,
        f"host key mismatch for {target.ssh_address}: expected {pin.fingerprint}"
        f"{f' ({pin.key_type})' if pin.key_type else ''}, presented {presented} "
        f"({key.get_name()}); connection refused",
        hint=_keyscan_hint(target, key.get_name()),
    )


def _keyscan(target: HostTarget, scan_type: str = "") -> str:
    """The ssh-keyscan command line that asks the host for its key."""
    type_option = f" -t {scan_type}" if scan_type else ""
    return f"ssh-keyscan -p {target.port}{type_option} {target.address}"


def _keyscan_hint(target: HostTarget, key_type: str | None) -> str:
    scan = _keyscan(target, _keyscan_type(key_type))
    return (
        f"if the host was legitimately reinstalled, verify its key out of band and re-pin "
        f"host_key with the line printed by `{scan}` (or its fingerprint: "
        f"`{scan} | ssh-keygen -lf -`); otherwise treat this as a possible "
        "man-in-the-middle"
    )


def _keyscan_type(key_type: str | None) -> str:
    if key_type is None:
        return ""
    if key_type.startswith("rsa") or key_type == "ssh-rsa":
        return "rsa"
    if key_type.startswith("ecdsa"):
        return "ecdsa"
    return key_type.removeprefix("ssh-")


def _authenticate(
    transport: paramiko.Transport, target: HostTarget, pkey: paramiko.PKey, timeout: float
) -> None:
    try:
        transport.auth_publickey(target.user, pkey)
    except paramiko.AuthenticationException as e:
        raise RemoteError(
            target.name,
            f"public-key authentication as {target.user!r} failed: {e}",
            hint=f"add the public key of {target.key_path} to ~{target.user}/.ssh/authorized_keys "
            "on the host, and check the user name",
        ) from e
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise RemoteError(
            target.name,
            f"authentication with {target.ssh_address} did not complete within {timeout:g}s: {e}",
            hint="the host may be overloaded (check its load and sshd's log); a login that "
            "started is not retried: run the Pulumi command again once the host responds",
        ) from e
    if not transport.is_authenticated():
        raise RemoteError(
            target.name,
            f"the host requires more than a public key to log in as {target.user!r}",
            hint="configure sshd for public-key-only authentication for this user",
        )


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)
