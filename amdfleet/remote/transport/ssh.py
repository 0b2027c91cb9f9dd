"""SSH connections with pinned host keys. Only this module and its helpers (``channel``:
one command on a channel; ``sftp``: file transfers; ``retry``: the connect retry policy)
import paramiko.

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
with exponential backoff, within the attempts and time of a
:class:`~amdfleet.remote.transport.retry.ConnectRetry`. A wrong host key, a rejected or
unreadable client key fail at once.

Usage::

    target = HostTarget(name="node-1", address="10.0.0.5", key_path="~/.ssh/id_ed25519",
                        host_key="ssh-ed25519 AAAAC3Nz...")
    with connect(target, timeout=10) as conn:
        conn.run("hostname", timeout=10).stdout
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import paramiko

from amdfleet.errors import HostKeyMismatchError, HostUnreachableError, RemoteError
from amdfleet.hostkeys import PinnedKey, fingerprint_of, parse_host_key
from amdfleet.remote.transport.channel import remaining, run_on_channel, watchdog
from amdfleet.remote.transport.connection import (
    CommandResult,
    OutputCollector,
    OutputListener,
    Redactor,
    command_error,
)
from amdfleet.remote.transport.retry import DEFAULT_RETRY, ConnectRetry, RetryListener, retrying
from amdfleet.remote.transport.sftp import makedirs, write_atomic
from amdfleet.remote.transport.target import HostTarget

DEFAULT_CONNECT_TIMEOUT = 10.0
# Host-key algorithms to offer first when the pinned key has this type (RSA keys are
# negotiated under their signature-algorithm names).
_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


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
    attempt = retrying(retry, on_retry)
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
    attempt = retrying(retry, on_retry)
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
        with watchdog(deadline, channel.close) as fired:
            try:
                exit_code = run_on_channel(channel, command, stdin, collector, deadline)
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
            makedirs(sftp, posixpath.dirname(remote_path))
            write_atomic(sftp, remote_path, content, mode)

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
            return self._transport.open_session(timeout=remaining(deadline))
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._lost(redactor(command), e)

    @contextlib.contextmanager
    def _sftp(self, deadline: float, what: str) -> Iterator[paramiko.SFTPClient]:
        channel: paramiko.Channel | None = None
        fired = threading.Event()
        try:
            channel = self._transport.open_session(timeout=remaining(deadline))
            with watchdog(deadline, channel.close) as fired:
                channel.settimeout(remaining(deadline))
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


def _open_transport(
    target: HostTarget, pin: PinnedKey | None, timeout: float, deadline: float
) -> paramiko.Transport:
    """One connect attempt: TCP connect (cut to the retry window), SSH handshake and
    host-key check (none without a pin: :func:`first_seen_host_key`); no login yet."""
    sock = _open_socket(target, min(timeout, remaining(deadline)))
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
