"""A real Docker daemon for tests: Debian's ``dockerd`` as a child of the test process.

What is real: ``dockerd`` (the ``docker.io`` package) with the containerd it manages, its
image store and its classic builder, driven by the machine's own ``docker`` CLI -- here
through :meth:`DockerDaemon.cli`, and on lab SSH hosts through the CLI's own config
(:meth:`DockerDaemon.current_context`).

The seam is the registry: none is reachable, so images are only ever made locally
(:meth:`DockerDaemon.import_image` turns a tarball built here into an image, the way
``docker import`` does) and tests never pull and never build ``FROM`` an image that is
not local. The only containers started run such an image (tests/providers/
test_engine_docker.py, with ``--pull=never``), in the daemon's empty network namespace.

Isolation. By default the daemon runs in a network namespace of its own holding nothing
but a loopback that is down (``unshare --net``; checked once it answers): should anything
make it reach for a registry (a ``FROM`` of a missing image does), the attempt ends with
"network is unreachable" before a packet is sent. With ``netns=`` it runs instead in an
existing namespace, a lab host's (tests/support/hostlab.py: ``eth0`` on the lab's bridge
and ``lo``), so it reaches what listens on the lab -- a registry of tests/support/
registry.py, named by ``insecure_registries`` since it speaks plain HTTP -- and nothing
else: that namespace must route only to directly connected subnets (no default route, no
route via a gateway), checked before the daemon starts and again once it answers, when a
daemon found in another namespace is refused too. It enters the namespace with
``nsenter --net`` rather than ``ip netns exec``, which mounts a fresh /sys without
/sys/fs/cgroup (dockerd then fails: "Devices cgroup isn't mounted"). Only the network is
the host's: the daemon is a child of the test process, in this machine's PID namespace
and file tree, so crashing or rebooting the lab host leaves it running (partitioning the
host cuts it off). Either way it has a private mount namespace
(``unshare --mount``), so the overlay mounts of its layers never show on this machine
and vanish with it.
Everything else it owns lives in one directory ``/run/amdfleet-test-docker/d-XXXX``:
``--data-root``, ``--exec-root``, ``--pidfile``, the API socket, its log, its
``--config-file`` (which keeps ``/etc/docker/daemon.json`` out, and moves the key the
daemon would write to ``/etc/docker/key.json``) and the local CLI's config. That
directory is outside the per-host directories of a lab host (/root /opt /var/log
/etc/ssh /tmp), so a host's CLI reaches the socket at the same path. Flags:
``--bridge=none --iptables=false --ip6tables=false`` (no network set up, no firewall
rules touched), ``--log-level=warn`` (a failure's log tail shows the failure),
``--insecure-registry`` per entry of ``insecure_registries`` and the first storage driver
that starts: overlay2, else vfs.

Lifecycle. Readiness is ``docker version`` answering, polled until a deadline while
waiting on the daemon's process (so a daemon that dies fails at once, with its log).
Stopping is by PID: SIGTERM, wait, SIGKILL, wait -- and the same for the containerd it
started, should it outlive the daemon -- then the directory is removed. A daemon left
behind by a killed test run (its directory's lock is free again) is stopped and removed
when the next one starts.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from amdfleet.remote.transport.connection import Connection
from tests.support.files import tail_file
from tests.support.hostlab import HostLab, LabFactory, require_netns

ROOT = Path("/run/amdfleet-test-docker")
STORAGE_DRIVERS = ("overlay2", "vfs")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0
_POLL_S = 0.02
# Made by dockerd's plugin discovery whatever its --exec-root; removed again (when empty)
# if the daemon made them.
_PLUGIN_DIRS = (Path("/run/docker/plugins"), Path("/run/docker"))
_LIVE: set[DockerDaemon] = set()


class DockerdError(RuntimeError):
    """dockerd could not start, stop or answer (with the daemon's log tail)."""


class DockerDaemon:
    """One running ``dockerd``; use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        workdir: Path,
        proc: subprocess.Popen[bytes],
        lock: IO[str],
        *,
        storage_driver: str,
        docker: str,
        netns: str | None = None,
    ) -> None:
        self.dir = workdir
        self.storage_driver = storage_driver
        self.docker = docker
        self.netns = netns
        self.timings: dict[str, float] = {}
        self._proc = proc
        self._lock = lock
        self._stopped = False
        self._made_dirs: tuple[Path, ...] = ()

    @classmethod
    def start(
        cls,
        *,
        timeout: float = START_TIMEOUT,
        netns: str | None = None,
        insecure_registries: Sequence[str] = (),
    ) -> DockerDaemon:
        """Start a daemon and wait until it answers; tries each storage driver in turn.

        ``netns`` (a name of ``ip netns``, e.g. a lab host's ``LabHost.netns``) runs it in
        that network namespace instead of an empty one of its own; it is refused unless the
        namespace routes only to directly connected subnets. ``insecure_registries``
        (``ADDRESS:PORT``) are registries it may reach over plain HTTP.

        Raises DockerdError with every attempt's log tail when none starts.
        """
        dockerd, docker = shutil.which("dockerd"), shutil.which("docker")
        if dockerd is None or docker is None:
            raise DockerdError("no dockerd/docker on PATH (apt-get install -y docker.io)")
        if os.geteuid() != 0:
            raise DockerdError("dockerd needs root")
        t0 = time.monotonic()
        if netns is not None:
            _refuse_leaving_routes(netns)  # before anything runs there (again once it answers)
        sweep_stale_daemons()
        failures = []
        for driver in STORAGE_DRIVERS:
            try:
                daemon = cls._start_with(
                    driver,
                    dockerd,
                    docker,
                    time.monotonic() + timeout,
                    netns=netns,
                    insecure_registries=insecure_registries,
                )
            except DockerdError as e:
                failures.append(f"--storage-driver={driver}: {e}")
                continue
            daemon.timings["start"] = time.monotonic() - t0
            return daemon
        raise DockerdError("dockerd did not start:\n" + "\n".join(failures))

    # -- access -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self._proc.pid

    @property
    def socket(self) -> Path:
        """The API socket (a unix socket; the same path on every lab host)."""
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` for this daemon."""
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        """dockerd's (and its containerd's) output."""
        return self.dir / "dockerd.log"

    @property
    def env(self) -> dict[str, str]:
        """An environment in which ``docker`` talks to this daemon only (and keeps its
        client config in the daemon's directory, not in ``~/.docker``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update({"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.dir / "cli")})
        return env

    def cli(
        self, *args: str, stdin: bytes = b"", check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this daemon; raises DockerdError if it fails and
        ``check``."""
        proc = subprocess.run(
            [self.docker, *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        result = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise DockerdError(
                f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def image(self, ref: str) -> dict[str, Any] | None:
        """``docker image inspect REF`` as a dict, or None when there is no such image."""
        result = self.cli("image", "inspect", ref, check=False)
        if result.returncode != 0:
            if "no such image" in result.stderr.lower():
                return None
            raise DockerdError(f"docker image inspect {ref}: {result.stderr.strip()}")
        found: list[dict[str, Any]] = json.loads(result.stdout)
        return found[0]

    def import_image(
        self,
        tag: str,
        files: Mapping[str, bytes],
        *,
        label: str = "",
        executables: Collection[str] = (),
    ) -> str:
        """Make image ``tag`` from a tarball of ``files`` (path -> content; mode 0644, 0755
        for the paths in ``executables``) built here, as ``docker import`` does; returns its
        id. No registry, no container involved."""
        args = ["import", "--message", "amdfleet test image"]
        if label:
            args += ["--change", f"LABEL {label}"]
        self.cli(*args, "-", tag, stdin=_tarball(files, executables))
        found = self.image(tag)
        assert found is not None, f"{tag} missing right after docker import"
        return str(found["Id"])

    def import_tree(
        self,
        tag: str,
        paths: Collection[str],
        *,
        changes: Collection[str] = (),
        timeout: float = 900,
    ) -> str:
        """Make image ``tag`` from this machine's ``paths`` as they are (directories whole,
        symlinks as symlinks), streamed by GNU tar into ``docker import``; returns its id.
        For images of real programs installed here (a Python and its venv); ``changes`` are
        Dockerfile instructions ``docker import --change`` applies (``ENV PATH=...``)."""
        whole = [p.rstrip("/") for p in paths if os.path.isdir(p) and not os.path.islink(p)]
        # Each path once (tar stores a second copy of a file as a hard link to itself).
        kept = {p for p in paths if not any(p.startswith(d + "/") for d in whole)}
        names = "\n".join(sorted(p.lstrip("/") for p in kept)) + "\n"
        tar = subprocess.Popen(
            ["tar", "-c", "-f", "-", "-C", "/", "--verbatim-files-from", "-T", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tar.stdin is not None and tar.stdout is not None
        tar.stdin.write(names.encode())
        tar.stdin.close()
        imported = subprocess.run(
            [
                self.docker,
                "import",
                "--message",
                "amdfleet test image",
                *(arg for change in changes for arg in ("--change", change)),
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        tar.stdout.close()
        tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        if tar.wait(timeout=60) != 0 or imported.returncode != 0:
            raise DockerdError(
                f"importing {tag} failed: tar: {tar_err.strip()[-500:]}; docker import: "
                f"{imported.stderr.decode(errors='replace').strip()[-500:]}"
            )
        found = self.image(tag)
        assert found is not None, f"{tag} missing right after docker import"
        return str(found["Id"])

    @contextlib.contextmanager
    def current_context(self, connect: Callable[[], Connection]) -> Iterator[str]:
        """Make this daemon the current docker context of the user ``connect()`` logs in
        as, with that host's own CLI, so a plain ``docker ...`` run there (as providers
        run it, without ``DOCKER_HOST``) talks to this daemon. Checks the host's CLI
        reaches it; on exit the context is removed (and ``~/.docker`` if it was new).
        Yields the context's name.
        """
        name = f"amdfleet-test-{self.dir.name}"
        with connect() as conn:
            fresh = not conn.run("test -e ~/.docker", timeout=30, check=False).ok
            conn.run(
                f"docker context create {name} --docker host={self.host} >/dev/null"
                f" && docker context use {name} >/dev/null",
                timeout=30,
            )
            seen = conn.run("docker info --format '{{.ID}}'", timeout=30).stdout.strip()
        expected = self.cli("info", "--format", "{{.ID}}").stdout.strip()
        try:
            if seen != expected:
                raise DockerdError(f"the host's docker reached daemon {seen!r}, not {expected!r}")
            yield name
        finally:
            undo = f"docker context use default >/dev/null; docker context rm --force {name}"
            with connect() as conn:
                conn.run(undo + ("; rm -rf ~/.docker" if fresh else ""), timeout=30)

    def log_tail(self, n: int = 20) -> str:
        """The last ``n`` lines of the daemon's log."""
        return tail_file(self.log_path, n)

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the daemon by PID (TERM, wait, KILL), then its containerd if it outlived
        it, and remove its directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        containerd = _read_pid(self.dir / "exec" / "containerd" / "containerd.pid")
        try:
            stop_child(self._proc)
            if containerd is not None:
                _stop_orphan(containerd, self.dir)
        finally:
            _remove_workdir(self.dir, self._lock, self._made_dirs)
            _LIVE.discard(self)
        self.timings["stop"] = time.monotonic() - t0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- starting ---------------------------------------------------------------------

    @classmethod
    def _start_with(
        cls,
        driver: str,
        dockerd: str,
        docker: str,
        deadline: float,
        *,
        netns: str | None,
        insecure_registries: Sequence[str],
    ) -> DockerDaemon:
        ROOT.mkdir(exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="d-", dir=ROOT))
        lock = _lock(workdir / "owner.lock")
        config = workdir / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(workdir / "key.json")}))
        # nsenter (not `ip netns exec`: see the module's docstring) execs unshare, which
        # execs dockerd: the child's PID is the daemon's.
        enter = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns is not None else []
        own_net = ["--net"] if netns is None else []
        argv = [
            *enter, "unshare", *own_net, "--mount", "--propagation", "private", "--",
            dockerd,
            f"--config-file={config}",
            f"--data-root={workdir / 'data'}",
            f"--exec-root={workdir / 'exec'}",
            f"--pidfile={workdir / 'docker.pid'}",
            f"--host=unix://{workdir / 'docker.sock'}",
            f"--storage-driver={driver}",
            "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--log-level=warn",
            *(f"--insecure-registry={registry}" for registry in insecure_registries),
        ]  # fmt: skip
        made_dirs = tuple(path for path in _PLUGIN_DIRS if not path.exists())
        (workdir / "made-dirs").write_text("".join(f"{path}\n" for path in made_dirs))
        with open(workdir / "dockerd.log", "wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        daemon = cls(workdir, proc, lock, storage_driver=driver, docker=docker, netns=netns)
        daemon._made_dirs = made_dirs
        _LIVE.add(daemon)
        try:
            daemon._wait_ready(deadline)
            daemon._check_isolated()
        except DockerdError as e:
            tail = daemon.log_tail()
            daemon.stop()
            raise DockerdError(f"{e}\n{tail}") from None
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _check_isolated(self) -> None:
        """Refuse a daemon that could reach a network: its own namespace must hold
        nothing but a loopback that is down; or, with ``netns``, it must be in that
        namespace, which must still route only to directly connected subnets."""
        if self.netns is not None:
            if _netns_inode(f"/proc/{self.pid}/ns/net") != _netns_inode(_netns_path(self.netns)):
                raise DockerdError(f"dockerd (pid {self.pid}) is not in netns {self.netns}")
            _refuse_leaving_routes(self.netns)
            return
        shown = _ip_json(["nsenter", f"--target={self.pid}", "--net"], "link", "show")
        links = [(link["ifname"], link["operstate"]) for link in shown]
        if links != [("lo", "DOWN")]:
            raise DockerdError(f"dockerd's network namespace is not empty: {links}")

    def _wait_ready(self, deadline: float) -> None:
        """Poll ``docker version`` until the server answers; fail at once if dockerd exits."""
        while True:
            probe = self.cli("version", "--format", "{{.Server.Version}}", check=False, timeout=10)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DockerdError(f"no answer on {self.socket}: {probe.stderr.strip()}")
            try:
                # The poll interval, spent waiting on the daemon: returns early if it dies.
                code = self._proc.wait(timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                continue
            raise DockerdError(f"dockerd exited with {code}")


def _refuse_leaving_routes(netns: str) -> None:
    """Refuse a namespace whose traffic could leave this machine: every route there (IPv4
    and IPv6) must go to a directly connected subnet -- no default route, no gateway."""
    enter = ["nsenter", f"--net={_netns_path(netns)}"]
    routes = _ip_json(enter, "-4", "route", "show") + _ip_json(enter, "-6", "route", "show")
    leaving = [route for route in routes if route.get("dst") == "default" or "gateway" in route]
    if leaving:
        raise DockerdError(f"refused: network namespace {netns} routes off its subnets: {leaving}")


def _netns_path(netns: str) -> str:
    path = Path("/run/netns") / netns
    if not path.exists():
        raise DockerdError(f"no network namespace {netns!r} (ip netns list)")
    return str(path)


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _ip_json(enter: Sequence[str], *args: str) -> list[dict[str, Any]]:
    """``ip -j ARGS`` run through ``enter`` (an nsenter command line), parsed."""
    shown = subprocess.run(
        [*enter, "ip", "-j", *args], capture_output=True, text=True, timeout=10, check=False
    )
    if shown.returncode != 0:
        raise DockerdError(f"{' '.join(enter)} ip {' '.join(args)}: {shown.stderr.strip()}")
    found: list[dict[str, Any]] = json.loads(shown.stdout or "[]")
    return found


def sweep_stale_daemons() -> None:
    """Stop and remove daemons whose test process died (their directory lock is free)."""
    if not ROOT.is_dir():
        return
    for workdir in sorted(ROOT.glob("d-*")):
        lock = _try_lock(workdir / "owner.lock")
        if lock is None:
            continue  # a live test process owns it
        for pidfile in (workdir / "docker.pid", workdir / "exec/containerd/containerd.pid"):
            pid = _read_pid(pidfile)
            if pid is not None:
                _stop_orphan(pid, workdir)
        made_dirs = _read_lines(workdir / "made-dirs")
        _remove_workdir(workdir, lock, tuple(Path(line) for line in made_dirs))


def _tarball(files: Mapping[str, bytes], executables: Collection[str] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            mode = 0o755 if path in executables else 0o644
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child process: TERM, wait, then KILL and wait."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _stop_orphan(pid: int, workdir: Path) -> None:
    """Stop a process that is not our child (TERM, then KILL), if it is still one of
    ``workdir``'s daemons. It cannot be waited for: poll until it is gone or a zombie."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _runs_from(pid, workdir):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _runs_from(pid, workdir) and time.monotonic() < deadline:
            time.sleep(_POLL_S)  # poll interval of a deadline-bounded wait (not our child)
    if _runs_from(pid, workdir):
        raise DockerdError(f"process {pid} of {workdir} survived SIGKILL")


def _runs_from(pid: int, workdir: Path) -> bool:
    """True while ``pid`` is alive (not a zombie) and its command line names ``workdir``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and str(workdir).encode() in cmdline


def _remove_workdir(workdir: Path, lock: IO[str], made_dirs: tuple[Path, ...] = ()) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    lock.close()
    for path in (ROOT, *made_dirs):
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty: another daemon may still use it


def _lock(path: Path) -> IO[str]:
    lock = _try_lock(path)
    if lock is None:
        raise DockerdError(f"{path} is locked by another process")
    return lock


def _try_lock(path: Path) -> IO[str] | None:
    try:
        f = open(path, "a+")  # noqa: SIM115 - kept open: the flock lives as long as the file
    except OSError:
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


@atexit.register
def _stop_leftover_daemons() -> None:
    for daemon in list(_LIVE):
        with contextlib.suppress(Exception):
            daemon.stop()


def lab_using(hostlab: LabFactory, docker: DockerDaemon) -> Iterator[HostLab]:
    """One SSH lab host whose own ``docker`` CLI talks to ``docker`` (its current
    context), for a module fixture to ``yield from``; the context is removed after."""
    lab = hostlab(1)
    require_netns(lab)
    with docker.current_context(lambda: lab.connect(0)):
        yield lab
