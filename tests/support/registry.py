"""A real container registry on a lab host: Debian's ``docker-registry`` (Docker
Distribution 2.8, the server of the ``registry:2`` image) as a child of the test process.

What is real: ``/usr/bin/docker-registry serve CONFIG`` with filesystem storage and
htpasswd basic auth (a bcrypt hash made here with :mod:`crypt`), listening on a lab
host's address (tests/support/hostlab.py) over plain HTTP. Daemons that push to it and
pull from it (tests/support/dockerd.py with ``netns=`` and ``insecure_registries=``) run
in the lab hosts' network namespaces; this machine reaches it through the lab's bridge,
which is how the helpers here (:meth:`LabRegistry.tags`, :meth:`LabRegistry.
manifest_digest`, :meth:`LabRegistry.requests`) read what it holds and what it served.

Placement. The registry runs in the host's network namespace only (``ip netns exec NS``
execs it: the child's PID is the registry's); it shares this machine's PID and mount
namespaces, so crashing or rebooting the lab host leaves it running, while partitioning
the host cuts it off. Its files -- config, htpasswd, storage, log -- live in one directory
``registry-XXXX`` in the host's lab directory (outside the host's own file tree), so a
registry left behind by a killed test run goes with its lab: the lab's sweep kills every
process in the lab's namespaces and removes the lab's directory.

Secrets. The password reaches the registry only as its bcrypt hash (cost 4: the registry
checks the hash on every request, and at the usual cost 12 that is ~0.3 s a request on
this machine). The registry logs the user name (``auth.user.name``) but never the password
or the ``Authorization`` header.

Lifecycle. Readiness is ``GET /v2/`` answering 401 (auth is on), polled until a deadline
while waiting on the process (a registry that dies fails at once, with its log tail).
Stopping is by PID: SIGTERM, wait, SIGKILL, wait; then the directory is removed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import httpx

from tests.support.dockerd import DockerDaemon, DockerdError, stop_child
from tests.support.files import tail_file
from tests.support.hostlab import HostLab, LabHost, require_netns

REGISTRY = "/usr/bin/docker-registry"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
HTTP_TIMEOUT = 10.0
BCRYPT_ROUNDS = 16  # bcrypt cost 4 (2**4 rounds), the least Go's bcrypt accepts
_POLL_S = 0.02
# Every manifest type a daemon may push: docker v2 (and its list), OCI (and its index).
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
# The registry's access log: `ADDR - - [time] "METHOD URI HTTP/1.1" STATUS SIZE "" "UA"`.
_ACCESS_LINE = re.compile(r'^(\S+) \S+ \S+ \[[^]]*\] "(\S+) (\S+) [^"]*" (\d{3}) ')
_LIVE: set[LabRegistry] = set()


class RegistryError(RuntimeError):
    """The registry could not start or stop, or answered unexpectedly (never carries the
    password)."""


@dataclass(frozen=True)
class RegistryRequest:
    """One line of the registry's access log: the client's address, the method, the
    request URI (path and query) and the status answered."""

    client: str
    method: str
    path: str
    status: int


class LabRegistry:
    """One running registry on a lab host; use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        host: LabHost,
        workdir: Path,
        proc: subprocess.Popen[bytes],
        *,
        port: int,
        username: str,
        password: str,
    ) -> None:
        self.host = host
        self.dir = workdir
        self.port = port
        self.username = username
        self.timings: dict[str, float] = {}
        self._password = password
        self._proc = proc
        self._stopped = False

    @classmethod
    def start(
        cls,
        host: LabHost,
        *,
        username: str,
        password: str,
        port: int = 5000,
        timeout: float = START_TIMEOUT,
    ) -> LabRegistry:
        """Start a registry on ``host`` (netns mode) at ``host.address:port`` that lets in
        ``username``/``password`` only, and wait until it answers.

        Raises RegistryError (with the registry's log tail) when it does not start.
        """
        if host.netns is None:
            raise RegistryError(f"{host.name} has no network namespace (lab in loopback mode)")
        if not Path(REGISTRY).exists():
            raise RegistryError(f"{REGISTRY} is missing (apt-get install -y docker-registry)")
        t0 = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="registry-", dir=host.dir))
        _write_config(workdir, f"{host.address}:{port}", username, password)
        with open(workdir / "registry.log", "wb") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, REGISTRY, "serve", str(workdir / "config.yml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_clean_env(),
                start_new_session=True,
            )
        registry = cls(host, workdir, proc, port=port, username=username, password=password)
        _LIVE.add(registry)
        try:
            registry._wait_ready(time.monotonic() + timeout)
        except RegistryError as e:
            tail = registry.log_tail()
            registry.stop()
            raise RegistryError(f"{e}\n{tail}") from None
        except BaseException:
            registry.stop()
            raise
        registry.timings["start"] = time.monotonic() - t0
        return registry

    # -- access -----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``ADDRESS:PORT`` as image references and ``--insecure-registry`` name it."""
        return f"{self.host.address}:{self.port}"

    @property
    def url(self) -> str:
        """The registry's base URL (plain HTTP)."""
        return f"http://{self.address}"

    @property
    def pid(self) -> int:
        """The registry's process id."""
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The registry's log (its structured lines and its access log); removed by
        :meth:`stop`, so read it before."""
        return self.dir / "registry.log"

    def log_tail(self, n: int = 20) -> str:
        """The last ``n`` lines of the registry's log."""
        return tail_file(self.log_path, n)

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` (e.g. ``amdfleet-test/engine``), sorted; ``[]`` when
        the registry does not know the repository."""
        with self._client() as client:
            answer = client.get(f"/v2/{repository}/tags/list")
        if answer.status_code == 404:
            return []
        _expect(answer, 200)
        return sorted(answer.json().get("tags") or [])

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest (``sha256:...``) of the manifest ``repository:reference`` (a tag or
        a digest) as the registry serves it to a daemon, or None when there is none."""
        with self._client() as client:
            answer = client.head(
                f"/v2/{repository}/manifests/{reference}",
                headers={"Accept": ", ".join(MANIFEST_TYPES)},
            )
        if answer.status_code == 404:
            return None
        _expect(answer, 200)
        return answer.headers["Docker-Content-Digest"]

    def requests(self) -> list[RegistryRequest]:
        """Every request the registry answered so far, in order (its access log)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [
            RegistryRequest(m[1], m[2], m[3], int(m[4]))
            for line in lines
            if (m := _ACCESS_LINE.match(line))
        ]

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the registry by PID (TERM, wait, KILL, wait) and remove its directory
        (storage and log included). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        try:
            stop_child(self._proc)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
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

    # -- helpers ----------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        # trust_env=False: a proxy set in the environment must not carry lab traffic.
        return httpx.Client(
            base_url=self.url,
            auth=(self.username, self._password),
            timeout=HTTP_TIMEOUT,
            trust_env=False,
        )

    def _wait_ready(self, deadline: float) -> None:
        """Poll ``GET /v2/`` until it answers 401; fail at once if the registry exits."""
        seen = "no answer"
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                try:
                    answer = client.get(f"{self.url}/v2/")
                except httpx.TransportError as e:
                    seen = f"{type(e).__name__}: {e}"
                else:
                    if answer.status_code == 401:
                        return
                    raise RegistryError(
                        f"GET {self.url}/v2/ answered {answer.status_code}, not 401: is"
                        " authentication off?"
                    )
                if time.monotonic() > deadline:
                    raise RegistryError(f"no answer on {self.url}/v2/: {seen}")
                try:
                    # The poll interval, spent waiting on the registry: returns if it dies.
                    code = self._proc.wait(timeout=_POLL_S)
                except subprocess.TimeoutExpired:
                    continue
                raise RegistryError(f"docker-registry exited with {code}")


@dataclass(frozen=True)
class RegistryLab:
    """A lab whose host0 serves the registry and where every host has its own dockerd
    (in its network namespace, naming the registry insecure), reached by that host's own
    ``docker`` CLI through its current context, as providers drive it."""

    lab: HostLab
    registry: LabRegistry
    daemons: tuple[DockerDaemon, ...]


@contextlib.contextmanager
def registry_lab(lab: HostLab, *, username: str, password: str) -> Iterator[RegistryLab]:
    """Start the registry on ``lab[0]`` and a daemon per host; stop them all on exit.
    Without a daemon here, fails under ``AMDFLEET_REQUIRE_DOCKER`` (CI) and skips
    elsewhere."""
    require_netns(lab)
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(
            LabRegistry.start(lab[0], username=username, password=password)
        )
        daemons = []
        for i, host in enumerate(lab):
            try:
                daemon = DockerDaemon.start(
                    netns=host.netns, insecure_registries=(registry.address,)
                )
            except DockerdError as e:
                _missing_docker(str(e))
            stack.enter_context(daemon)
            stack.enter_context(daemon.current_context(lambda i=i: lab.connect(i)))
            daemons.append(daemon)
        yield RegistryLab(lab, registry, tuple(daemons))


def _missing_docker(why: str) -> NoReturn:
    from tests.support.prerequisites import missing

    missing("docker", why)


def bcrypt_hash(password: str) -> str:
    """A ``$2b$`` bcrypt hash of ``password`` (cost 4), as htpasswd files hold it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt goes in Python 3.13
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=BCRYPT_ROUNDS))


def _write_config(workdir: Path, listen: str, username: str, password: str) -> None:
    if ":" in username or not username:
        raise RegistryError(f"invalid registry user name {username!r}")
    htpasswd = workdir / "htpasswd"
    htpasswd.touch(mode=0o600)
    htpasswd.write_text(f"{username}:{bcrypt_hash(password)}\n")
    # JSON is YAML: the registry reads this as its config.yml.
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": listen, "secret": secrets.token_hex(16)},
        "auth": {"htpasswd": {"realm": "amdfleet-lab", "path": str(htpasswd)}},
    }
    (workdir / "config.yml").write_text(json.dumps(config, indent=2))


def _clean_env() -> dict[str, str]:
    # REGISTRY_* variables override the config file; none of this machine's may.
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def _expect(answer: httpx.Response, status: int) -> None:
    if answer.status_code != status:
        raise RegistryError(
            f"{answer.request.method} {answer.request.url} answered {answer.status_code},"
            f" not {status}: {answer.text[:500]}"
        )


@atexit.register
def _stop_leftover_registries() -> None:
    for registry in list(_LIVE):
        with contextlib.suppress(Exception):
            registry.stop()
