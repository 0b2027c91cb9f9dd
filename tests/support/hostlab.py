"""A lab of real SSH hosts for tests: each host is an sshd in its own namespaces.

Netns mode (the normal one, needs root and ``ip netns``)
    One Linux bridge per lab with its own /24 subnet ``10.77.N.0/24`` (the bridge is
    ``.1``), and per host: a network namespace, a veth pair whose outer end is a bridge
    port, the address ``10.77.N.(10+i)`` on ``eth0`` (no default route: nothing can leave
    the machine), and ``unshare --mount --uts --pid --fork --mount-proc --kill-child``
    running sshd as PID 1 of a new PID namespace, after bind-mounting per-host
    directories over /root /opt /var/log /etc/ssh and /tmp (tmp last, since the lab's own
    directories live under /tmp) and mounting a private tmpfs on /dev/shm. Each host has
    its own hostname, HOME, /tmp, /opt, /dev/shm, process table, host key and log. The
    per-host directories start empty (not copies of this machine's /root, which would
    leak the tester's files into the hosts) except /etc/ssh, which is a copy of this
    machine's plus the lab's sshd_config and host key.

Loopback mode (fallback when ``ip netns add`` is refused, or ``AMDFLEET_HOSTLAB=loopback``)
    sshd listens on ``127.0.0.(10+i)`` with a free port, with a per-host config, host key
    and authorized_keys, but shares this machine's hostname, files and processes.
    ``partition`` is unavailable and ``crash`` only kills the host's sshd processes; tests
    that need real isolation check :attr:`HostLab.netns` and skip.

Parallel labs (several in one session, or pytest-xdist workers) never collide: a lab owns
its subnet number N through an ``flock`` on ``<registry>/10.77.N.lock`` for its whole
life, and every name it creates (bridge ``afbrN``, namespaces ``afns-N-i``, veths
``afvNhi``) derives from N. A lab left behind by a killed test run (its lock is free again)
is swept -- processes killed, namespaces and links deleted -- when the next lab starts.
The lock files themselves stay in the registry (deleting a lock file races with lockers).

Hosts are direct children of the test process (the ``unshare`` parent); teardown kills
them by PID and waits, then deletes the namespaces, links and directories.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from amdfleet.remote.transport.ssh import SshConnection, connect
from amdfleet.remote.transport.target import HostTarget
from tests.support.files import tail_file
from tests.support.ports import free_port

SUBNET_PREFIX = "10.77"
SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 15.0
SHM_SIZE = "4g"
_IP_TIMEOUT = 15.0
_LIVE_LABS: set[HostLab] = set()


LabFactory = Callable[..., "HostLab"]
"""The type of the ``hostlab`` fixture: ``hostlab(count, mode=None) -> HostLab``."""


def require_netns(lab: HostLab) -> None:
    """Skip the calling test when ``lab`` runs on loopback (no namespaces, no isolation);
    fail it instead under ``AMDFLEET_REQUIRE_NETNS`` (tests/support/prerequisites.py)."""
    if not lab.netns:
        from tests.support.prerequisites import missing

        why = "ip netns refused or AMDFLEET_HOSTLAB=loopback"
        missing("netns", f"needs netns mode: hostlab runs on loopback ({why})")


def process_alive(conn: SshConnection, pid: int) -> bool:
    """Process ``pid`` runs on the host and is not a zombie: a lab host's PID 1 (sshd)
    never reaps orphans, and a zombie still answers ``kill -0``."""
    state = conn.run(f"ps -o stat= -p {pid}", timeout=10, check=False).stdout.strip()
    return bool(state) and not state.startswith("Z")


class LabError(RuntimeError):
    """The lab could not be built or torn down (with the failing command's output)."""


@dataclass
class LabHost:
    """One SSH host of a lab; ``target`` gives what a connection needs."""

    name: str
    index: int
    address: str
    port: int
    dir: Path
    host_key: str
    user: str = "root"
    netns: str | None = None
    veth: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """True while the host's process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        """sshd's log (stderr) for this host, outside the host's own file tree."""
        return self.dir / "sshd.log"

    def path(self, host_path: str) -> Path:
        """Where a path of the host lives on this machine (netns mode; /root, /opt,
        /var/log, /etc/ssh and /tmp are per host)."""
        for inside, outside in _BIND_DIRS:
            if host_path == inside or host_path.startswith(inside + "/"):
                return self.dir / outside / host_path[len(inside) :].lstrip("/")
        return Path(host_path)


_BIND_DIRS = (
    ("/root", "root"),
    ("/opt", "opt"),
    ("/var/log", "var_log"),
    ("/etc/ssh", "etc_ssh"),
    ("/tmp", "tmp"),
)


class HostLab:
    """N real SSH hosts; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        count: int,
        *,
        workdir: Path | None = None,
        mode: str | None = None,
        host_private_key: str | None = None,
        authorized_keys: Sequence[str] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("a lab needs at least one host")
        self.count = count
        self.netns = _choose_mode(mode) == "netns"
        self.workdir = Path(tempfile.mkdtemp(prefix="hostlab-", dir=workdir))
        self.hosts: list[LabHost] = []
        self.subnet: int | None = None
        self.bridge: str | None = None
        self._lock_file: IO[str] | None = None
        self._closed = False
        self.client_key = self.workdir / "client_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.timings: dict[str, float] = {}
        self._host_private_key = host_private_key
        self._authorized_keys = tuple(authorized_keys) if authorized_keys is not None else None

    @classmethod
    def start(
        cls,
        count: int,
        *,
        workdir: Path | None = None,
        mode: str | None = None,
        host_private_key: str | None = None,
        authorized_keys: Sequence[str] | None = None,
    ) -> HostLab:
        """Create and boot a lab of ``count`` hosts; waits until every sshd answers.

        ``host_private_key`` (an OpenSSH private key's text) is every host's host key
        instead of a generated one, and ``authorized_keys`` (public key lines) replace the
        lab's client key in root's authorized_keys -- a host configured as cloud-init
        would configure it from amdfleet's user-data (tests/support/clouds/lab_boot.py).
        """
        lab = cls(
            count,
            workdir=workdir,
            mode=mode,
            host_private_key=host_private_key,
            authorized_keys=authorized_keys,
        )
        _LIVE_LABS.add(lab)
        try:
            lab._build()
        except BaseException:
            lab.close()
            raise
        return lab

    # -- access -----------------------------------------------------------------------

    def __getitem__(self, index: int) -> LabHost:
        return self.hosts[index]

    def __iter__(self) -> Iterator[LabHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def target(self, host: LabHost | int, **overrides: Any) -> HostTarget:
        """The HostTarget for ``host`` with its pinned key and the lab's client key;
        ``overrides`` replace fields (validated, like ``port=2222``)."""
        h = self._host(host)
        fields = {
            "name": h.name,
            "connection": "ssh",
            "address": h.address,
            "port": h.port,
            "user": h.user,
            "key_path": str(self.client_key),
            "host_key": h.host_key,
        }
        return HostTarget.model_validate({**fields, **overrides})

    def host_target(self, host: LabHost | int) -> HostTarget:
        """``host`` as the HostTarget providers receive (what the planner makes of a
        stack's SSH host entry)."""
        return self.target(host)

    def host_props(self, host: LabHost | int) -> dict[str, Any]:
        """``host`` as the plain ``host`` property of a provider (a dumped
        :meth:`host_target`; minus ``connection`` it is a stack's host entry)."""
        return self.host_target(host).model_dump(mode="json")

    def connect(self, host: LabHost | int, *, timeout: float = 10.0) -> SshConnection:
        """An open SshConnection to ``host`` (strict host-key checking)."""
        return connect(self.target(host), timeout=timeout)

    def alive(self, host: LabHost | int, pid: int) -> bool:
        """Whether process ``pid`` runs on ``host`` (see :func:`process_alive`)."""
        with self.connect(host) as conn:
            return process_alive(conn, pid)

    def ssh_argv(self, host: LabHost | int, command: str) -> list[str]:
        """An OpenSSH client command line for ``host`` (handy when debugging a test)."""
        h = self._host(host)
        return [
            "ssh",
            "-F", "none",
            "-i", str(self.client_key),
            "-p", str(h.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            f"{h.user}@{h.address}",
            command,
        ]  # fmt: skip

    # -- faults -----------------------------------------------------------------------

    def crash(self, host: LabHost | int) -> None:
        """Kill the host hard (SIGKILL to its PID 1: every process on it dies) and wait."""
        h = self._host(host)
        if not h.running:
            return
        assert h.proc is not None
        if self.netns:
            for pid in _children(h.proc.pid):
                _kill(pid, signal.SIGKILL)
        else:
            _killpg(h.proc.pid, signal.SIGKILL)
        _wait_or_kill(h.proc)

    def reboot(self, host: LabHost | int, *, timeout: float = READY_TIMEOUT) -> None:
        """Start the host again (crashing it first if needed); files stay, processes don't."""
        h = self._host(host)
        self.crash(h)
        self._boot(h)
        self._wait_ready(h, time.monotonic() + timeout)

    def partition(self, host: LabHost | int) -> None:
        """Cut the host off the network (its bridge port goes down); connects time out.

        Refuses (and heals) if the kernel would then route the host's address elsewhere
        (``ignore_routes_with_linkdown``), since that traffic could leave the machine.
        """
        h = self._host(host)
        self._set_link(h, "down")
        route = _run(["ip", "route", "get", h.address])
        if f"dev {self.bridge} " not in route + " ":
            self._set_link(h, "up")
            raise LabError(f"partition of {h.name} would route {h.address} off the lab: {route}")

    def heal(self, host: LabHost | int) -> None:
        """Undo :meth:`partition`."""
        self._set_link(self._host(host), "up")

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Kill every host (by PID, then wait), delete namespaces, links, lock and files.

        Idempotent; runs every step even when one fails, then reports the failures.
        """
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for h in self.hosts:
            _collect(errors, self.crash, h)
            if h.proc is not None:
                _collect(errors, _wait_or_kill, h.proc)
        if self.subnet is not None:
            _collect(errors, _sweep_subnet, self.subnet)
        self._release_subnet()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _LIVE_LABS.discard(self)
        if errors:
            raise LabError("hostlab teardown was incomplete:\n" + "\n".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- building ---------------------------------------------------------------------

    def _build(self) -> None:
        t0 = time.monotonic()
        _prepare_machine()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostlab-client",
              "-f", str(self.client_key)])  # fmt: skip
        if self.netns:
            sweep_stale_labs()
            self._claim_subnet()
            self._create_bridge()
        for i in range(self.count):
            self.hosts.append(self._create_host(i))
        t1 = time.monotonic()
        deadline = t1 + READY_TIMEOUT
        for h in self.hosts:
            self._boot(h)
        for h in self.hosts:
            self._wait_ready(h, deadline)
        self._write_known_hosts()
        self.timings = {"setup": t1 - t0, "boot": time.monotonic() - t1}

    def _claim_subnet(self) -> None:
        registry = _registry_dir()
        candidates = list(range(256))
        random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(candidates)
        in_use = _subnets_in_use()
        for n in candidates:
            if n in in_use:
                continue
            lock = _try_lock(registry / f"{SUBNET_PREFIX}.{n}.lock")
            if lock is None:
                continue  # a live lab owns it (what dead owners left was swept already)
            self.subnet, self._lock_file = n, lock
            self._record_owner()
            return
        raise LabError(f"no free {SUBNET_PREFIX}.N.0/24 subnet for a new lab")

    def _record_owner(self) -> None:
        assert self._lock_file is not None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        json.dump({"pid": os.getpid(), "workdir": str(self.workdir)}, self._lock_file)
        self._lock_file.flush()

    def _release_subnet(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # drops the flock
            self._lock_file = None

    def _create_bridge(self) -> None:
        n = self.subnet
        self.bridge = f"afbr{n}"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{SUBNET_PREFIX}.{n}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _create_host(self, i: int) -> LabHost:
        name = f"host{i}"
        hdir = self.workdir / name
        for _, sub in _BIND_DIRS:
            (hdir / sub).mkdir(parents=True)
        (hdir / "tmp").chmod(0o1777)
        shutil.copytree("/etc/ssh", hdir / "etc_ssh", dirs_exist_ok=True, symlinks=True)
        for old in (hdir / "etc_ssh").glob("ssh_host_*"):
            old.unlink()
        if self.netns:
            address, port = f"{SUBNET_PREFIX}.{self.subnet}.{10 + i}", 22
        else:
            address = f"127.0.0.{10 + i}"
            port = free_port(address)
        host_key = self._host_files(hdir, address, port)
        host = LabHost(name, i, address, port, hdir, host_key, user=_current_user())
        if self.netns:
            self._create_netns(host)
        return host

    def _host_files(self, hdir: Path, address: str, port: int) -> str:
        etc = hdir / "etc_ssh"
        key = etc / "ssh_host_ed25519_key"
        if self._host_private_key is None:
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
        else:
            key.touch(mode=0o600)
            key.write_text(self._host_private_key)
            public = _run(["ssh-keygen", "-y", "-f", str(key)])
            key.with_suffix(".pub").write_text(public)
        pub = self.client_key.with_suffix(".pub").read_text()
        if self._authorized_keys is not None:
            pub = "".join(f"{line}\n" for line in self._authorized_keys)
        if self.netns:
            ssh_dir = hdir / "root" / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text(pub)
            keys, host_key_path = ".ssh/authorized_keys", "/etc/ssh/ssh_host_ed25519_key"
        else:
            (hdir / "authorized_keys").write_text(pub)
            keys, host_key_path = str(hdir / "authorized_keys"), str(key)
        (etc / "sshd_config").write_text(_sshd_config(address, port, host_key_path, keys))
        return " ".join(key.with_suffix(".pub").read_text().split()[:2])

    def _create_netns(self, h: LabHost) -> None:
        n = self.subnet
        h.netns, h.veth = f"afns-{n}-{h.index}", f"afv{n}h{h.index}"
        peer = f"afp{n}h{h.index}"
        _ip("netns", "add", h.netns)
        _ip("link", "add", h.veth, "type", "veth", "peer", "name", peer, "netns", h.netns)
        _ip("link", "set", h.veth, "master", str(self.bridge), "up")
        _ip("-n", h.netns, "link", "set", peer, "name", "eth0")
        _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
        _ip("-n", h.netns, "link", "set", "eth0", "up")
        _ip("-n", h.netns, "link", "set", "lo", "up")

    def _boot(self, h: LabHost) -> None:
        with open(h.log_path, "ab") as log:
            h.proc = subprocess.Popen(
                self._boot_argv(h),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # terminal signals must not reach the hosts
            )

    def _boot_argv(self, h: LabHost) -> list[str]:
        if not self.netns:
            return [SSHD, "-D", "-e", "-f", str(h.dir / "etc_ssh" / "sshd_config")]
        mounts = "".join(f"mount --bind {h.dir / sub} {inside}\n" for inside, sub in _BIND_DIRS)
        # A private /dev/shm per host, as separate machines have (vLLM's CPU backend and
        # torch.distributed put shared-memory segments there).
        shm = f"mount -t tmpfs -o size={SHM_SIZE},mode=1777 tmpfs /dev/shm\n"
        boot = (
            f"set -e\n{mounts}{shm}hostname {h.name}\nexec {SSHD} -D -e -f /etc/ssh/sshd_config\n"
        )
        unshare = ["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child"]
        return ["ip", "netns", "exec", str(h.netns), *unshare, "sh", "-c", boot]

    def _wait_ready(self, h: LabHost, deadline: float) -> None:
        """Poll until sshd sends its banner; fail fast if the host process exits."""
        while True:
            if h.proc is not None and h.proc.poll() is not None:
                raise LabError(
                    f"{h.name} exited with {h.proc.returncode}:\n{tail_file(h.log_path)}"
                )
            if _answers_ssh(h.address, h.port):
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"{h.name} did not answer on {h.address}:{h.port}\n{tail_file(h.log_path)}"
                )
            time.sleep(0.005)  # poll interval of a deadline-bounded readiness loop

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
            lines.append(f"{where} {h.host_key}\n")
        self.known_hosts.write_text("".join(lines))

    def _set_link(self, h: LabHost, state: str) -> None:
        if not self.netns or h.veth is None:
            raise LabError("partition/heal need netns mode (this lab runs on loopback)")
        _ip("link", "set", h.veth, state)

    def _host(self, host: LabHost | int) -> LabHost:
        return self.hosts[host] if isinstance(host, int) else host


# -- machine-level helpers -------------------------------------------------------------


def _choose_mode(mode: str | None) -> str:
    mode = mode or os.environ.get("AMDFLEET_HOSTLAB") or "auto"
    if mode not in ("auto", "netns", "loopback"):
        raise ValueError(f"unknown hostlab mode {mode!r} (auto, netns or loopback)")
    if mode != "auto":
        return mode
    return "netns" if netns_available() else "loopback"


_NETNS_PROBE: list[bool] = []


def netns_available() -> bool:
    """True when this process may create network namespaces (checked once)."""
    if not _NETNS_PROBE:
        name = f"afns-probe-{os.getpid()}"
        ok = _try_run(["ip", "netns", "add", name])
        if ok:
            _try_run(["ip", "netns", "del", name])
        _NETNS_PROBE.append(ok and shutil.which("unshare") is not None)
    return _NETNS_PROBE[0]


def _prepare_machine() -> None:
    if not Path(SSHD).exists():
        raise LabError(f"{SSHD} is missing: apt-get install -y openssh-server iproute2")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def _sshd_config(address: str, port: int, host_key: str, authorized_keys: str) -> str:
    return "\n".join(
        [
            f"ListenAddress {address}",
            f"Port {port}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PidFile none",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _registry_dir() -> Path:
    for base in (Path("/run"), Path(tempfile.gettempdir())):
        path = base / "amdfleet-hostlab"
        with contextlib.suppress(OSError):
            path.mkdir(exist_ok=True)
            if os.access(path, os.W_OK):
                return path
    raise LabError("no writable directory for the hostlab registry")


def _try_lock(path: Path) -> IO[str] | None:
    f = open(path, "a+")  # noqa: SIM115 - kept open: the flock lives as long as the file
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _subnets_in_use() -> set[int]:
    """Subnet numbers N already present on this machine (addresses or routes)."""
    out = _run(["ip", "-4", "-o", "addr", "show"]) + _run(["ip", "-4", "route", "show"])
    used = set()
    for word in out.split():
        parts = word.split("/")[0].split(".")
        if len(parts) == 4 and ".".join(parts[:2]) == SUBNET_PREFIX and parts[2].isdigit():
            used.add(int(parts[2]))
    return used


def _sweep_subnet(n: int, leftovers: Mapping[int, list[tuple[str, str]]] | None = None) -> None:
    """Remove every process, namespace and link named after subnet ``n``."""
    found = (leftovers if leftovers is not None else _leftovers()).get(n, [])
    for kind, name in found:
        if kind == "netns":
            for pid in _run(["ip", "netns", "pids", name]).split():
                _kill(int(pid), signal.SIGKILL)
            _wait_gone(name)
            _try_run(["ip", "netns", "del", name])
    for kind, name in found:
        if kind == "link":
            _try_run(["ip", "link", "del", name])


def _leftovers() -> dict[int, list[tuple[str, str]]]:
    """Namespaces and links on this machine named like a lab's, by subnet number."""
    found: dict[int, list[tuple[str, str]]] = {}
    for line in _run(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.strip() else ""
        if m := _NETNS_NAME.fullmatch(name):
            found.setdefault(int(m[1]), []).append(("netns", name))
    for word in _run(["ip", "-o", "link", "show"]).split():
        name = word.rstrip(":").split("@")[0]
        if m := _LINK_NAME.fullmatch(name):
            found.setdefault(int(m[1] or m[2]), []).append(("link", name))
    return found


_NETNS_NAME = re.compile(r"afns-(\d+)-\d+")
_LINK_NAME = re.compile(r"afbr(\d+)|afv(\d+)h\d+")


def sweep_stale_labs() -> None:
    """Clean up after labs whose test process died (their subnet locks are free)."""
    registry = _registry_dir()
    leftovers = _leftovers()
    for n in leftovers:
        lock = _try_lock(registry / f"{SUBNET_PREFIX}.{n}.lock")
        if lock is None:
            continue  # a live lab owns it
        with lock:
            _sweep_subnet(n, leftovers)
            _remove_stale_workdir(lock)


def _remove_stale_workdir(lock: IO[str]) -> None:
    lock.seek(0)
    with contextlib.suppress(ValueError):
        owner = json.loads(lock.read() or "{}")
        workdir = owner.get("workdir")
        if workdir and Path(workdir).name.startswith("hostlab-"):
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_gone(ns: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _run(["ip", "netns", "pids", ns]).split() and time.monotonic() < deadline:
        time.sleep(0.01)  # poll interval of a deadline-bounded wait


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The unshare parent ignores SIGTERM; SIGKILL makes --kill-child take PID 1 down.
        proc.kill()
        proc.wait(timeout=timeout)


def _answers_ssh(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(argv: Sequence[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _try_run(argv: Sequence[str]) -> bool:
    proc = subprocess.run(argv, capture_output=True, timeout=_IP_TIMEOUT, check=False)
    return proc.returncode == 0


def _collect(errors: list[str], fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except Exception as e:  # teardown must go on; the errors are reported at the end
        errors.append(f"{getattr(fn, '__name__', fn)}: {e}")


@atexit.register
def _close_leftover_labs() -> None:
    for lab in list(_LIVE_LABS):
        with contextlib.suppress(Exception):
            lab.close()
