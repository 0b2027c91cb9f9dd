"""SFTP steps of an SSH connection: directories, atomic writes, private files."""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from collections.abc import Callable

import paramiko
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE


def makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    """Create ``directory`` and its missing parents (mode 0755); existing ones are fine."""
    if directory in ("", "/", "."):
        return
    try:
        sftp.stat(directory)
        return
    except FileNotFoundError:
        pass
    makedirs(sftp, posixpath.dirname(directory))
    try:
        sftp.mkdir(directory, 0o755)
    except OSError:
        sftp.stat(directory)  # created meanwhile by someone else: fine; otherwise re-raise


def write_atomic(sftp: paramiko.SFTPClient, path: str, content: bytes, mode: int) -> None:
    """Write ``content`` to a private temp file beside ``path``, chmod it to ``mode`` and
    rename it over ``path``; the temp file is removed if any step fails."""
    directory, name = posixpath.split(path)
    tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with sftp_create_private(sftp, tmp) as f:
            f.set_pipelined(True)
            f.write(content)
        sftp.chmod(tmp, mode)
        sftp.posix_rename(tmp, path)
    except BaseException:
        _remove_quietly(sftp, tmp)
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


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
        sftp.remove(path)
