"""The lab's registry and per-host Docker daemons: the test support of engine images
built once, pushed to a registry and pulled by digest on every node.

Real: two SSH hosts in network namespaces (``hostlab``); Debian's ``docker-registry``
with htpasswd auth listening on host0's address (tests/support/registry.py); one
``dockerd`` in host0's network namespace (A) and one in host1's (B), both naming the
registry with ``--insecure-registry`` (tests/support/dockerd.py); each host's own
``docker`` CLI reaching its own daemon through its current context, as providers drive
them. An image made here with ``docker import`` is pushed from A and pulled by digest on
B, through the lab's bridge; nothing leaves this machine (the hosts' namespaces have no
default route, which the daemons check).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.dockerd import ROOT, DockerDaemon, DockerdError
from tests.support.hostlab import HostLab, LabFactory, LabHost
from tests.support.processes import alive
from tests.support.registry import LabRegistry, RegistryRequest, registry_lab

USER = "amdfleet-lab"
# Random, so that finding it in a log can only mean it leaked there.
PASSWORD = f"pw-{secrets.token_urlsafe(18)}"
REPOSITORY = "amdfleet-test/engine"
LOCAL = "amdfleet-test/registry-base:1"
FILES = {"etc/amdfleet-test-engine": b"an image pushed to the lab's registry\n"}
LOCAL_2 = "amdfleet-test/registry-base:2"
FILES_2 = {"etc/amdfleet-test-engine": b"an image B never pulls\n"}
_PROCESS_NAMES = {"dockerd", "containerd", "docker-registry"}

pytestmark = [pytest.mark.docker, pytest.mark.netns]


@dataclass(frozen=True)
class Setup:
    """Two hosts, the registry on host0, daemon ``a`` in host0's namespace, ``b`` in
    host1's; each host's ``docker`` reaches its own daemon."""

    lab: HostLab
    registry: LabRegistry
    a: DockerDaemon
    b: DockerDaemon


@dataclass(frozen=True)
class Pushed:
    """The image A pushed: its tag, digest, id and A's CLI output."""

    tag: str
    digest: str
    image_id: str
    output: str

    @property
    def by_digest(self) -> str:
        return f"{self.tag.rsplit(':', 1)[0]}@{self.digest}"


@pytest.fixture(scope="module")
def setup(hostlab: LabFactory) -> Iterator[Setup]:
    """Everything started once for the module; afterwards every daemon and the registry
    are stopped, and no dockerd, containerd or registry process is left on the hosts."""
    with hostlab(2) as lab:
        with registry_lab(lab, username=USER, password=PASSWORD) as started:
            registry, (a, b) = started.registry, started.daemons
            pids = {registry.pid, a.pid, b.pid, *_containerd_pids(a, b)}
            yield Setup(lab, registry, a, b)
        assert [pid for pid in pids if alive(pid)] == []
        assert _lab_processes(lab) == []
        assert not registry.dir.exists() and not a.dir.exists() and not b.dir.exists()


@pytest.fixture(scope="module")
def pushed(setup: Setup) -> Pushed:
    """A local image, tagged for the registry, pushed from A after a login whose password
    went on stdin."""
    a, registry = setup.a, setup.registry
    image_id = a.import_image(LOCAL, FILES)
    tag = f"{registry.address}/{REPOSITORY}:1"
    a.cli("tag", LOCAL, tag)
    a.cli(
        "login", registry.address, "--username", USER, "--password-stdin", stdin=PASSWORD.encode()
    )
    output = a.cli("push", tag).stdout
    return Pushed(tag, _digest(output, "1"), image_id, output)


@pytest.fixture(scope="module")
def pulled(setup: Setup, pushed: Pushed) -> str:
    """The pushed image pulled by digest on host1, by that host's own ``docker`` (as
    providers run it: logged in with the password on stdin); returns the pull's output."""
    login = f"docker login {setup.registry.address} --username {USER} --password-stdin"
    with setup.lab.connect(1) as conn:
        conn.run(login, stdin=PASSWORD, timeout=60)
        return conn.run(f"docker pull {pushed.by_digest}", timeout=120).stdout


# -- the registry ------------------------------------------------------------------------


def test_the_registry_answers_only_its_user(setup: Setup) -> None:
    registry = setup.registry
    with httpx.Client(base_url=registry.url, timeout=10, trust_env=False) as client:
        anonymous = client.get("/v2/")
        wrong = client.get("/v2/", auth=(USER, PASSWORD + "x"))
        right = client.get("/v2/", auth=(USER, PASSWORD))

    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="amdfleet-lab"'
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert registry.tags("amdfleet-test/absent") == []
    assert registry.manifest_digest("amdfleet-test/absent", "1") is None


def test_each_hosts_docker_reaches_its_own_daemon_in_its_namespace(setup: Setup) -> None:
    ids = []
    for host, daemon in ((setup.lab[0], setup.a), (setup.lab[1], setup.b)):
        with setup.lab.connect(host) as conn:
            seen = conn.run("docker info --format '{{.ID}} {{json .RegistryConfig}}'", timeout=30)
        daemon_id, config = seen.stdout.strip().split(" ", 1)
        assert daemon_id == daemon.cli("info", "--format", "{{.ID}}").stdout.strip()
        assert f'"{setup.registry.address}":{{' in config  # named as insecure
        assert _netns_inode(daemon.pid) == _netns_inode_of(host)
        ids.append(daemon_id)
    assert ids[0] != ids[1]


def test_no_daemon_starts_in_a_namespace_that_routes_off_the_lab(setup: Setup) -> None:
    host, lab = setup.lab[1], setup.lab
    # A route via a gateway (to TEST-NET-1, RFC 5737) stands for any way out: a default
    # route is refused the same way, but the lab's namespaces never get one.
    route = ["192.0.2.0/24", "via", f"10.77.{lab.subnet}.1"]
    before = sorted(ROOT.glob("d-*"))
    _ip("-n", str(host.netns), "route", "add", *route)
    try:
        with pytest.raises(DockerdError, match=r"routes off its subnets.*192\.0\.2\.0/24"):
            DockerDaemon.start(netns=host.netns)
    finally:
        _ip("-n", str(host.netns), "route", "del", *route)
    assert sorted(ROOT.glob("d-*")) == before  # refused before anything ran


# -- push and pull by digest -------------------------------------------------------------


def test_an_image_pushed_from_a_is_pulled_by_digest_on_b(
    setup: Setup, pushed: Pushed, pulled: str
) -> None:
    registry, a, b = setup.registry, setup.a, setup.b

    assert registry.tags(REPOSITORY) == ["1"]
    assert registry.manifest_digest(REPOSITORY, "1") == pushed.digest
    assert registry.manifest_digest(REPOSITORY, pushed.digest) == pushed.digest
    on_a, on_b = a.image(pushed.tag), b.image(pushed.by_digest)
    assert on_a is not None and on_b is not None, pulled
    assert on_a["Id"] == on_b["Id"] == pushed.image_id
    assert on_a["RepoDigests"] == on_b["RepoDigests"] == [pushed.by_digest]
    assert on_b["RepoTags"] == []  # pulled by digest: no tag on B
    assert f"Digest: {pushed.digest}" in pulled
    # B fetched the manifest by digest, from host1's address, through the lab's bridge.
    manifest = f"/v2/{REPOSITORY}/manifests/{pushed.digest}"
    assert RegistryRequest(setup.lab[1].address, "GET", manifest, 200) in registry.requests()


def test_a_pull_without_login_is_refused(setup: Setup, pushed: Pushed) -> None:
    a, b, registry = setup.a, setup.b, setup.registry
    a.import_image(LOCAL_2, FILES_2)
    a.cli("tag", LOCAL_2, f"{registry.address}/{REPOSITORY}:2")
    digest = _digest(a.cli("push", f"{registry.address}/{REPOSITORY}:2").stdout, "2")
    seen = len(registry.requests())

    refused = _anonymous_pull(b, f"{registry.address}/{REPOSITORY}@{digest}")

    assert refused.returncode != 0
    assert "no basic auth credentials" in refused.stderr
    answered = registry.requests()[seen:]
    assert answered and all(r.status == 401 for r in answered), answered
    assert {r.client for r in answered} == {setup.lab[1].address}
    assert b.image(f"{registry.address}/{REPOSITORY}@{digest}") is None


def test_a_digest_already_held_is_pulled_without_asking_the_registry(
    setup: Setup, pulled: str, pushed: Pushed
) -> None:
    """What a node holding the image does: it pings the registry (unanswered without
    credentials) but asks for no manifest and no blob, so the pull needs no login."""
    seen = len(setup.registry.requests())

    again = _anonymous_pull(setup.b, pushed.by_digest)

    assert again.returncode == 0, again.stderr
    asked = setup.registry.requests()[seen:]
    assert {r.path for r in asked} <= {"/v2/"}, asked


def test_the_password_is_in_no_log(setup: Setup, pushed: Pushed, pulled: str) -> None:
    logs = {
        "registry": setup.registry.log_path,
        "dockerd A": setup.a.log_path,
        "dockerd B": setup.b.log_path,
        **{f"sshd {host.name}": host.log_path for host in setup.lab},
    }

    leaked = [name for name, path in logs.items() if PASSWORD in path.read_text(errors="replace")]

    assert leaked == []
    assert PASSWORD not in pushed.output + pulled
    assert f"auth.user.name={USER} " in setup.registry.log_path.read_text()  # the user, yes


# -- helpers -----------------------------------------------------------------------------


def _digest(push_output: str, tag: str) -> str:
    """The digest ``docker push`` printed for ``tag``."""
    found = re.search(rf"^{tag}: digest: (sha256:[0-9a-f]{{64}}) size: \d+$", push_output, re.M)
    assert found, push_output
    return found[1]


def _anonymous_pull(daemon: DockerDaemon, ref: str) -> subprocess.CompletedProcess[str]:
    """``docker pull REF`` by a CLI that never logged in (an empty DOCKER_CONFIG)."""
    with tempfile.TemporaryDirectory() as config:
        return subprocess.run(
            [daemon.docker, "pull", ref],
            capture_output=True,
            text=True,
            env={**daemon.env, "DOCKER_CONFIG": config},
            timeout=60,
            check=False,
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, timeout=10, check=True)


def _containerd_pids(*daemons: DockerDaemon) -> list[int]:
    pidfiles = [d.dir / "exec" / "containerd" / "containerd.pid" for d in daemons]
    return [int(p.read_text()) for p in pidfiles]


def _lab_processes(lab: HostLab) -> list[str]:
    """dockerd, containerd and registry processes in the lab's network namespaces."""
    found = []
    for host in lab:
        listed = subprocess.run(
            ["ip", "netns", "pids", str(host.netns)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        for pid in listed.stdout.split():
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                if name in _PROCESS_NAMES:
                    found.append(f"{host.name}: {pid} {name}")
    return found


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _netns_inode_of(host: LabHost) -> int:
    return os.stat(f"/run/netns/{host.netns}").st_ino
