"""A private PostgreSQL server for tests: Debian's own server, started by the test session.

:meth:`PostgresServer.start` makes a directory ``/tmp/amdfleet-postgres-<random>``, runs
``initdb`` into it and starts ``postgres`` as a child of this process (its own session),
listening on 127.0.0.1 on a free port over TLS only (a self-signed certificate for
``127.0.0.1`` made with ``openssl``, so clients verify it with ``sslmode=verify-full``) and
on a unix socket inside that directory. PostgreSQL refuses to run as root (``initdb: error:
cannot be run as root``), so under root both run as the ``postgres`` system user the
package creates (``nobody`` where there is none), with the directory given to that user.
The server is ready when ``pg_isready`` says it accepts connections, polled until a
deadline. :meth:`PostgresServer.database` creates a role with a random password and a
database it owns; TCP logins need that password (``scram-sha-256``), and only the
directory's socket trusts its local superuser (the test's own SQL, through ``psql``
reading stdin, so no password is ever on a command line).

:meth:`PostgresServer.stop` asks for a fast shutdown (SIGINT to the postmaster, by PID),
waits, kills the process group if it must, and removes the directory. The directory holds
``owner`` (this process's PID and start time): a server whose owner is gone (a run that
was killed) is killed and its directory removed by the next :meth:`PostgresServer.start`;
a live owner's server (another test session on this machine) is left alone.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.processes import group_alive
from tests.support.waiting import wait_until

INSTALLS = Path("/usr/lib/postgresql")  # Debian's per-version server directories
TMP = Path("/tmp")  # world-traversable, so the unprivileged server user reaches its directory
PREFIX = "amdfleet-postgres-"
ADMIN = "amdfleet_admin"
READY_TIMEOUT = 60.0


class PostgresError(RuntimeError):
    """The server could not be set up (with the command's output or the server log)."""


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` directory, or None."""
    found = [p.parent for p in INSTALLS.glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


def missing_reason() -> str | None:
    """Why this machine cannot run the server, or None."""
    if server_binaries() is None:
        return (
            "no PostgreSQL server (/usr/lib/postgresql/*/bin/postgres): "
            "apt-get install --no-install-recommends postgresql"
        )
    if shutil.which("openssl") is None:
        return "openssl is needed for the server's TLS certificate; apt-get install openssl"
    return None


@dataclass(frozen=True)
class Database:
    """A database and the password-protected role that owns it."""

    name: str
    role: str
    password: str
    port: int
    root_cert: Path
    """The server's self-signed certificate: the CA a client verifies it with."""

    def url(self, *, password: str | None = None, with_password: bool = True) -> str:
        """The Pulumi backend URL: ``postgres://role:password@127.0.0.1:port/name`` with
        TLS verified against the server's certificate (``password`` overrides the role's;
        ``with_password=False`` leaves it out, for a pgpass file)."""
        secret = password if password is not None else self.password
        userinfo = f"{self.role}:{secret}" if with_password else self.role
        query = f"sslmode=verify-full&sslrootcert={self.root_cert}"
        return f"postgres://{userinfo}@127.0.0.1:{self.port}/{self.name}?{query}"

    def pgpass_line(self) -> str:
        """This role's line for a pgpass file (``host:port:db:user:password``)."""
        return f"127.0.0.1:{self.port}:{self.name}:{self.role}:{self.password}\n"


class PostgresServer:
    """One running server; use :meth:`start` (a context manager)."""

    def __init__(self, directory: Path, binaries: Path, port: int) -> None:
        self.directory = directory
        self.binaries = binaries
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[PostgresServer]:
        """Clean up servers of dead runs, then set up and start a new one; stopped and
        removed on exit."""
        binaries = server_binaries()
        if binaries is None:
            raise PostgresError(missing_reason() or "no PostgreSQL server")
        remove_orphans()
        directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=TMP))  # mode 0700 until set up
        (directory / "owner").write_text(_owner_record(os.getpid()))
        server = cls(directory, binaries, free_port())
        try:
            server._init()
            server._launch()
            yield server
        finally:
            server.stop()

    # -- what tests use ------------------------------------------------------------------

    @property
    def root_cert(self) -> Path:
        return self.directory / "server.crt"

    def database(self, name: str) -> Database:
        """A new database ``name`` owned by a new role ``name`` with a random password."""
        password = secrets.token_urlsafe(18)
        self.sql(
            f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}';\n"
            f'CREATE DATABASE "{name}" OWNER "{name}";\n'
        )
        return Database(name, name, password, self.port, self.root_cert)

    def sql(self, script: str, *, database: str = "postgres") -> str:
        """Run ``script`` as the superuser over the directory's socket (read from stdin,
        stopping at the first error); what ``psql -At`` printed."""
        argv = [str(self.binaries / "psql"), "-h", str(self.directory), "-p", str(self.port)]
        argv += ["-U", ADMIN, "-d", database, "-XqAt", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        proc = subprocess.run(
            argv,
            input=script.encode(),
            capture_output=True,
            timeout=30,
            check=False,
            env=_client_env(),
        )
        if proc.returncode != 0:
            raise PostgresError(f"psql failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        return proc.stdout.decode()

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown by PID, the process group killed if it outlives the deadline, and
        the directory removed. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: clients are disconnected
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if proc is not None:
            _kill_group(proc.pid)  # a backend that outlived its postmaster
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- set-up --------------------------------------------------------------------------

    def _init(self) -> None:
        certificate = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        certificate += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        certificate += ["-keyout", str(self.directory / "server.key"), "-out", str(self.root_cert)]
        self._run(certificate, as_server=False)
        user = _server_user()
        if user is not None:
            for path in (self.directory, self.directory / "server.key", self.root_cert):
                os.chown(path, user.pw_uid, user.pw_gid)
        (self.directory / "server.key").chmod(0o600)
        self.root_cert.chmod(0o644)
        self.directory.chmod(0o755)  # clients (root or this user) read the certificate
        initdb = [str(self.binaries / "initdb"), "-D", str(self.directory / "data"), "-U", ADMIN]
        initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8"]
        self._run([*initdb, "--no-sync", "--no-instructions"], as_server=True)
        # TCP only with TLS and a password; the socket (in this directory) for the admin.
        (self.directory / "data" / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _launch(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            "ssl": "on",
            "ssl_cert_file": str(self.root_cert),
            "ssl_key_file": str(self.directory / "server.key"),
            # A throwaway server: durability is not worth the disk syncs.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv = [str(self.binaries / "postgres"), "-D", str(self.directory / "data")]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with (self.directory / "server.log").open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped by PID here, never by a test's Ctrl-C
                env=_server_env(self.directory),
                **_as_server_user(),
            )
        wait_until(self._ready, READY_TIMEOUT, "PostgreSQL to accept connections")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise PostgresError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
        probe = [str(self.binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, timeout=10, check=False, env=_client_env()).returncode == 0

    def _run(self, argv: list[str], *, as_server: bool) -> None:
        extra = _as_server_user() if as_server else {}
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=120,
            check=False,
            env=_server_env(self.directory),
            **extra,
        )
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
            raise PostgresError(f"{Path(argv[0]).name} failed ({proc.returncode}):\n{output}")


def remove_orphans() -> list[Path]:
    """Kill the server of every ``amdfleet-postgres-*`` directory whose owner process is
    gone and remove the directory; the ones removed."""
    removed = []
    for directory in sorted(TMP.glob(PREFIX + "*")):
        try:
            record = (directory / "owner").read_text()
        except FileNotFoundError:
            if time.time() - directory.stat().st_mtime < 60:
                continue  # just made by another session, which writes its owner next
            record = ""
        pid = int(record.split()[0]) if record.split() else 0
        if pid and _owner_record(pid) == record:
            continue  # its session still runs
        postmaster = _postmaster_pid(directory)
        if postmaster is not None:
            _kill_group(postmaster)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


# -- helpers ---------------------------------------------------------------------------------


def _owner_record(pid: int) -> str:
    """``<pid> <start time>``: the start time (clock ticks after boot) tells a reused PID
    from the process that wrote the record. Empty when ``pid`` is not running."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    if fields[0] in ("Z", "X"):
        return ""
    return f"{pid} {fields[19]}\n"


def _postmaster_pid(directory: Path) -> int | None:
    """The PID in the data directory's ``postmaster.pid``, if it is that server's."""
    try:
        pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(directory / "data").encode() in cmdline else None


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (the postmaster and its backends), waiting
    until none is left running (this machine's PID 1 reaps nothing: zombies count as gone)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_until(lambda: not group_alive(pid), 30, f"process group {pid} to die", interval=0.05)


def _server_user() -> pwd.struct_passwd | None:
    """Who runs initdb and postgres: None (this user) unless this process is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresError("running as root, and neither a postgres nor a nobody user exists")


def _as_server_user() -> dict[str, Any]:
    user = _server_user()
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _server_env(directory: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(directory), "LC_ALL": "C", "TZ": "UTC"}


def _client_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PGCONNECT_TIMEOUT": "5"}
