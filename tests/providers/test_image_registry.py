"""Engine images built once, pushed to a registry, and pulled by digest on every node.

Real: the providers (EngineImageBuild, EngineImage, ImagePin), run by amdfleet's
provider plugin over gRPC (``provider_host``); two SSH hosts in network
namespaces (``hostlab``); Debian's ``docker-registry`` with htpasswd auth on host0's
address (tests/support/registry.py); one ``dockerd`` in host0's namespace (A: the build
host and node 0) and one in host1's (B: node 1), each reached by its host's own ``docker``
CLI over SSH, exactly as the providers run it (tests/support/dockerd.py).

The seam is what builds: no outside registry is reachable, so the base image is made
here with ``docker import`` on A only (B gets every layer from the lab's registry), and
a build's steps run no container (``LABEL``). The one build from the real rendered AITER
+ vLLM Dockerfile is the failing one: its first ``RUN`` finds no shell in the base. The
build that passes its deadline fetches an ``ADD`` URL from a local server that never
finishes its answer. Host facts are given as the components pass them (per host, the
gfx archs its GPUs report): the lab has no GPUs.

Replacements follow the engine's order: Diff decides, then create the new resource and
delete the old one.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amdfleet.plan.image import build_inputs_hash, content_tag
from amdfleet.providers.engine_image import EngineImage, EngineImageProps
from amdfleet.providers.image_build import EngineImageBuild, EngineImageBuildProps
from amdfleet.providers.image_pin import ImagePin, ImagePinProps
from amdfleet.remote.images import DOCKERFILE_LABEL
from amdfleet.render import dockerfile_text
from tests.support.dockerd import DockerDaemon
from tests.support.hostlab import HostLab, LabFactory
from tests.support.pulumi_host import CreateOutcome, ProviderCallError, ProviderHost
from tests.support.registry import LabRegistry, registry_lab

USER = "amdfleet-builder"
# Random, so that finding it anywhere can only mean it leaked there.
PASSWORD = f"pw-{secrets.token_urlsafe(18)}"
REPOSITORY = "amdfleet-test/vllm-aiter"
BASE = "amdfleet-test/base:1"
BASE_FILES = {"etc/amdfleet-test-base": b"a local base image: no registry made it\n"}
WORK_DIR = "/opt/amdfleet/image-build"
TIMEOUT_S = 300

pytestmark = [pytest.mark.docker, pytest.mark.netns]


@dataclass(frozen=True)
class Lab:
    """Two hosts, the registry on host0; daemon ``a`` (host0: build host and node 0) and
    ``b`` (host1: node 1)."""

    hosts: HostLab
    registry: LabRegistry
    a: DockerDaemon
    b: DockerDaemon

    def image_props(self, host: int, ref: str, **overrides: Any) -> dict[str, Any]:
        """EngineImage inputs for pulling ``ref`` on ``host``, as the components build them."""
        fields: dict[str, Any] = {
            "host": self.hosts.host_target(host),
            "image": ref,
            "build_dir": "/opt/amdfleet/node-image",
            "timeout_s": TIMEOUT_S,
            "registry": self.registry.address,
            "registry_username": USER,
            "registry_password": PASSWORD,
        }
        props = EngineImageProps(**{**fields, **overrides})
        return props.to_inputs()


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> Iterator[Lab]:
    """Everything started once; afterwards the daemons and the registry are stopped."""
    with hostlab(2) as hosts, registry_lab(hosts, username=USER, password=PASSWORD) as started:
        a, b = started.daemons
        a.import_image(BASE, BASE_FILES)
        yield Lab(hosts, started.registry, a, b)


# -- building once, pulling one digest everywhere -----------------------------------------


def test_built_once_pushed_and_every_node_runs_the_same_digest(
    provider_host: ProviderHost, lab: Lab
) -> None:
    dockerfile, digest = _build_inputs(vllm_ref=uuid.uuid4().hex)
    tag = content_tag(digest)
    urn = provider_host.urn("image-build", EngineImageBuild)
    build = _create(provider_host, _build_props(lab, dockerfile, digest), urn)

    outs = build.outputs
    pushed = lab.registry.manifest_digest(REPOSITORY, tag)
    assert pushed is not None and pushed.startswith("sha256:")
    ref = f"{lab.registry.address}/{REPOSITORY}@{pushed}"
    assert (outs["ref"], outs["digest"], outs["built"], outs["created"]) == (
        ref,
        pushed,
        True,
        True,
    )
    built = lab.a.image(f"{lab.registry.address}/{REPOSITORY}:{tag}")
    assert built is not None and built["Config"]["Labels"][DOCKERFILE_LABEL] == digest
    log = lab.hosts[0].path(outs["log_path"])
    assert outs["log_path"] == f"{WORK_DIR}/{tag}.log"
    assert "Successfully built" in log.read_text()  # docker's own lines, streamed to the file
    assert not lab.hosts[0].path(f"{WORK_DIR}/{tag}").exists()  # the context is gone

    nodes = [
        _create(
            provider_host, lab.image_props(i, ref), provider_host.urn(f"image-node{i}", EngineImage)
        )
        for i in (0, 1)
    ]
    on_a, on_b = lab.a.image(ref), lab.b.image(ref)
    assert on_a is not None and on_b is not None
    assert on_a["Id"] == on_b["Id"] == built["Id"]
    assert on_a["RepoDigests"] == on_b["RepoDigests"] == [ref]
    assert [n.outputs["digest"] for n in nodes] == [ref, ref]
    assert [n.outputs["image_id"] for n in nodes] == [built["Id"]] * 2
    # Node 0 is the build host: it had the image; node 1 pulled it by digest.
    assert [n.outputs["created"] for n in nodes] == [False, True]
    _assert_password_nowhere(lab, [build, *nodes])

    for i, node in enumerate(nodes):
        provider_host.delete(
            node.id, node.outputs, urn=provider_host.urn(f"image-node{i}", EngineImage)
        )
    provider_host.delete(build.id, build.outputs, urn=urn)
    assert lab.b.image(ref) is None and lab.a.image(ref) is None
    assert not log.exists()
    assert lab.registry.manifest_digest(REPOSITORY, tag) == pushed  # the cache stays


def test_an_unchanged_build_never_rebuilds_and_a_changed_ref_rebuilds_once(
    provider_host: ProviderHost, lab: Lab
) -> None:
    first_ref = uuid.uuid4().hex
    dockerfile, digest = _build_inputs(vllm_ref=first_ref)
    props = _build_props(lab, dockerfile, digest)
    urn = provider_host.urn("image-rebuild", EngineImageBuild)
    first = _create(provider_host, props, urn)
    assert first.outputs["built"] is True

    # `pulumi up` with nothing changed: Diff sees no change, nothing runs.
    same = provider_host.check(props, urn=urn).inputs
    unchanged = provider_host.diff(first.id, first.outputs, same, urn=urn)
    assert (unchanged.changes, unchanged.replaces) == (False, [])
    # Another stack asking for the same build adopts it, from the build host's copy or,
    # once that is gone, from the registry: no second build either way.
    other = _create(
        provider_host, props, provider_host.urn("image-rebuild-other", EngineImageBuild)
    )
    assert (other.outputs["built"], other.outputs["ref"]) == (False, first.outputs["ref"])
    lab.a.cli("image", "rm", f"{lab.registry.address}/{REPOSITORY}:{content_tag(digest)}")
    pulled = _create(
        provider_host, props, provider_host.urn("image-rebuild-pulled", EngineImageBuild)
    )
    assert (pulled.outputs["built"], pulled.outputs["ref"]) == (False, first.outputs["ref"])

    # The vLLM ref changes: a new content hash, a new tag, exactly one build.
    dockerfile_2, digest_2 = _build_inputs(vllm_ref=uuid.uuid4().hex)
    news = provider_host.check(_build_props(lab, dockerfile_2, digest_2), urn=urn).inputs
    diff = provider_host.diff(first.id, first.outputs, news, urn=urn)
    assert (diff.changes, sorted(diff.replaces)) == (True, ["content_hash", "image"])
    second = provider_host.create(news, urn=urn)
    provider_host.delete(first.id, first.outputs, urn=urn)

    assert second.outputs["built"] is True
    assert second.outputs["ref"] != first.outputs["ref"]
    assert {content_tag(digest), content_tag(digest_2)} <= set(lab.registry.tags(REPOSITORY))
    builds = _build_logs(lab)
    assert builds == [f"{content_tag(digest_2)}.log"]  # the first's log went with it

    # The nodes follow: their image input is the new digest, a replacement pulls it.
    node_urn = provider_host.urn("image-rebuild-node1", EngineImage)
    node = _create(provider_host, lab.image_props(1, first.outputs["ref"]), node_urn)
    moved = provider_host.check(lab.image_props(1, second.outputs["ref"]), urn=node_urn).inputs
    node_diff = provider_host.diff(node.id, node.outputs, moved, urn=node_urn)
    assert (node_diff.changes, node_diff.replaces) == (True, ["image"])
    node_2 = provider_host.create(moved, urn=node_urn)
    provider_host.delete(node.id, node.outputs, urn=node_urn)
    assert node_2.outputs["digest"] == second.outputs["ref"]
    assert lab.b.image(first.outputs["ref"]) is None

    provider_host.delete(node_2.id, node_2.outputs, urn=node_urn)
    for name, made in (("image-rebuild-other", other), ("image-rebuild-pulled", pulled)):
        provider_host.delete(made.id, made.outputs, urn=provider_host.urn(name, EngineImageBuild))
    provider_host.delete(second.id, second.outputs, urn=urn)
    assert _build_logs(lab) == []


# -- refused before building ----------------------------------------------------------------


def test_a_build_for_another_gfx_target_is_refused_before_anything_runs(
    provider_host: ProviderHost, lab: Lab
) -> None:
    dockerfile, digest = _build_inputs(vllm_ref=uuid.uuid4().hex)
    props = _build_props(
        lab,
        dockerfile,
        digest,
        gfx_targets=("gfx942",),
        fleet_archs={"host0": ["gfx942"], "host1": ["gfx950"]},
        build_hours=1.0,
        timeout_s=6 * 3600,
    )
    seen = len(lab.registry.requests())
    with pytest.raises(ProviderCallError) as refused:
        _create(provider_host, props, provider_host.urn("image-wrong-gfx", EngineImageBuild))

    assert refused.value.message == (
        "amdfleet.errors.ImageBuildRefused: refusing to build the engine image for gfx942: "
        "host1 has gfx950 GPUs, which it would not run on — about 1 h of build (deadline "
        "6 h 00 min) wasted\n  hint: add gfx950 to image_build.gfx_targets, or run the stack on "
        "gfx942 hosts"
    )
    assert lab.registry.requests()[seen:] == []  # not even a login was tried
    assert lab.registry.manifest_digest(REPOSITORY, content_tag(digest)) is None
    assert _build_logs(lab) == []

    # A node that builds its own image (no registry) refuses the same way.
    node = lab.image_props(
        1,
        "amdfleet/vllm-aiter:c-0000",
        dockerfile=dockerfile,
        dockerfile_hash=digest,
        gfx_targets=("gfx942",),
        host_archs=["gfx950"],
        build_hours=2.0,
        registry=None,
        registry_username=None,
        registry_password=None,
    )
    before = lab.b.cli("image", "ls", "--all", "--quiet").stdout
    with pytest.raises(ProviderCallError, match=r"host1 has gfx950 GPUs.*about 2 h of build"):
        _create(provider_host, node, provider_host.urn("image-wrong-gfx-node", EngineImage))
    assert lab.b.cli("image", "ls", "--all", "--quiet").stdout == before


def test_a_wrong_password_fails_before_the_build(provider_host: ProviderHost, lab: Lab) -> None:
    dockerfile, digest = _build_inputs(vllm_ref=uuid.uuid4().hex)
    wrong = f"{PASSWORD}-wrong"
    props = _build_props(lab, dockerfile, digest, registry_password=wrong)
    with pytest.raises(ProviderCallError) as failed:
        _create(provider_host, props, provider_host.urn("image-bad-login", EngineImageBuild))
    message = failed.value.message
    assert "could not log in to the registry" in message
    assert "401 Unauthorized" in message
    assert wrong not in message and PASSWORD not in message
    assert _build_logs(lab) == []


# -- a failing build, a build past its deadline ---------------------------------------------


def test_a_failing_build_reports_its_last_lines_keeps_its_log_and_removes_its_context(
    provider_host: ProviderHost, lab: Lab
) -> None:
    """The real rendered AITER + vLLM Dockerfile, FROM the local base: its first RUN has
    no shell to run in."""
    targets = ("gfx950",)
    dockerfile = dockerfile_text(
        BASE, "de07f3885ee5f2030ba72b6cc5940d674fd457cf", "1" * 40, targets
    )
    digest = build_inputs_hash(dockerfile, {"targets": list(targets)})
    tag = content_tag(digest)
    with pytest.raises(ProviderCallError) as failed:
        _create(
            provider_host,
            _build_props(lab, dockerfile, digest),
            provider_host.urn("image-fail", EngineImageBuild),
        )

    message = failed.value.message
    log_path = f"{WORK_DIR}/{tag}.log"
    image = f"{lab.registry.address}/{REPOSITORY}:{tag}"
    assert message.startswith(
        f"amdfleet.errors.RemoteCommandError: [host0] command exited 1: docker build -t "
        f"{image} (log: {log_path})\n  last lines of output:\n"
    )
    assert "RUN pip uninstall -y aiter vllm" in message
    assert "hint: fix the build (the full log is on the build host)" in message
    log = lab.hosts[0].path(log_path).read_text()
    assert "RUN pip uninstall -y aiter vllm" in log
    assert log.rstrip().endswith("amdfleet: docker build exited 1")
    assert not lab.hosts[0].path(f"{WORK_DIR}/{tag}").exists()
    assert lab.a.image(image) is None
    assert lab.registry.manifest_digest(REPOSITORY, tag) is None
    lab.hosts[0].path(log_path).unlink()


def test_a_build_past_its_deadline_is_stopped_and_its_context_removed(
    provider_host: ProviderHost, lab: Lab
) -> None:
    with _stalling_server(f"10.77.{lab.hosts.subnet}.1") as url:
        dockerfile = f"FROM {BASE}\nADD {url} /stalled\n"
        digest = build_inputs_hash(dockerfile, {})
        tag = content_tag(digest)
        props = _build_props(lab, dockerfile, digest, timeout_s=3)
        with pytest.raises(ProviderCallError) as late:
            _create(provider_host, props, provider_host.urn("image-late", EngineImageBuild))

    message = late.value.message
    assert message.startswith("amdfleet.errors.RemoteCommandError: [host0] command timed out")
    assert "the build passed its deadline of 3 s (image_build.timeout_s) and was stopped" in message
    log_path = lab.hosts[0].path(f"{WORK_DIR}/{tag}.log")
    assert log_path.read_text().rstrip().endswith("amdfleet: docker build exited 124")
    assert not lab.hosts[0].path(f"{WORK_DIR}/{tag}").exists()
    assert lab.a.image(f"{lab.registry.address}/{REPOSITORY}:{tag}") is None
    log_path.unlink()


# -- a pre-built image's moving tag -----------------------------------------------------------


def test_a_moving_tag_is_pinned_once_and_a_later_push_never_moves_the_stack(
    provider_host: ProviderHost, lab: Lab
) -> None:
    """The tag lives in the lab's registry; the hosts logged in to it themselves (as a
    user does for a private registry)."""
    tag = f"{lab.registry.address}/amdfleet-test/vllm-dev:nightly"
    first = _push_moving_tag(lab, tag, b"first nightly\n")
    with _logged_in(lab, 1):
        urn = provider_host.urn("image-pin", ImagePin)
        props = ImagePinProps(
            host=lab.hosts.host_target(1), image=tag, timeout_s=TIMEOUT_S
        ).to_inputs()
        pin = _create(provider_host, props, urn)
        ref = f"{lab.registry.address}/amdfleet-test/vllm-dev@{first}"
        assert (pin.outputs["ref"], pin.outputs["digest"], pin.outputs["pulled"]) == (
            ref,
            first,
            True,
        )

        second = _push_moving_tag(lab, tag, b"second nightly\n")
        assert second != first
        # refresh, then `up` with the stack unchanged: the pin holds.
        read = provider_host.read(pin.id, pin.outputs, urn=urn)
        assert read.outputs["ref"] == ref
        again = provider_host.check(props, urn=urn).inputs
        diff = provider_host.diff(pin.id, read.outputs, again, urn=urn)
        assert (diff.changes, diff.replaces) == (False, [])
        # A new head (a replaced cloud instance): the pin moves with it, unresolved.
        moved_props = ImagePinProps(host=lab.hosts.host_target(0), image=tag, timeout_s=TIMEOUT_S)
        moved = provider_host.check(moved_props.to_inputs(), urn=urn).inputs
        head_diff = provider_host.diff(pin.id, read.outputs, moved, urn=urn)
        assert (head_diff.changes, head_diff.replaces) == (True, [])
        updated = provider_host.update(pin.id, read.outputs, moved, urn=urn)
        assert (updated["ref"], updated["pulled"]) == (ref, False)
        assert lab.a.image(tag) is None  # nothing was pulled on the new head
        # A node staged after the push still gets the pinned digest.
        node_urn = provider_host.urn("image-pin-node0", EngineImage)
        node = _create(provider_host, lab.image_props(0, ref), node_urn)
        assert node.outputs["digest"] == ref
        assert lab.a.image(ref) is not None
        assert lab.a.image(f"{lab.registry.address}/amdfleet-test/vllm-dev@{second}") is None

        provider_host.delete(node.id, node.outputs, urn=node_urn)
        provider_host.delete(pin.id, pin.outputs, urn=urn)
        assert lab.b.image(tag) is None and lab.b.image(ref) is None


def test_an_image_given_by_digest_is_pinned_as_it_is_without_a_call(
    provider_host: ProviderHost, lab: Lab
) -> None:
    ref = f"{lab.registry.address}/amdfleet-test/none@sha256:{'0' * 64}"
    seen = len(lab.registry.requests())
    props = ImagePinProps(host=lab.hosts.host_target(1), image=ref, timeout_s=TIMEOUT_S)
    pin = _create(
        provider_host,
        props.to_inputs(),
        provider_host.urn("image-pin-digest", ImagePin),
    )
    assert (pin.outputs["ref"], pin.outputs["pulled"]) == (ref, False)
    assert lab.registry.requests()[seen:] == []


# -- helpers ---------------------------------------------------------------------------------


def _build_inputs(*, vllm_ref: str) -> tuple[str, str]:
    """A small Dockerfile FROM the local base (no container runs) and its content hash."""
    dockerfile = f"FROM {BASE}\nLABEL io.amdfleet.vllm-ref={vllm_ref}\n"
    return dockerfile, build_inputs_hash(dockerfile, {"vllm_ref": vllm_ref})


def _build_props(lab: Lab, dockerfile: str, digest: str, **overrides: Any) -> dict[str, Any]:
    """EngineImageBuild inputs as the components build them (the build host is host0)."""
    fields: dict[str, Any] = {
        "host": lab.hosts.host_target(0),
        "image": f"{lab.registry.address}/{REPOSITORY}:{content_tag(digest)}",
        "dockerfile": dockerfile,
        "content_hash": digest,
        "gfx_targets": ("gfx942",),
        "fleet_archs": {"host0": [], "host1": []},
        "build_hours": 1.0,
        "timeout_s": TIMEOUT_S,
        "work_dir": WORK_DIR,
        "registry": lab.registry.address,
        "registry_username": USER,
        "registry_password": PASSWORD,
    }
    props = EngineImageBuildProps(**{**fields, **overrides})
    return props.to_inputs()


def _create(provider_host: ProviderHost, props: dict[str, Any], urn: str) -> CreateOutcome:
    checked = provider_host.check(props, urn=urn)
    assert checked.failures == []
    return provider_host.create(checked.inputs, urn=urn)


def _build_logs(lab: Lab) -> list[str]:
    work = lab.hosts[0].path(WORK_DIR)
    return sorted(p.name for p in work.glob("*.log")) if work.is_dir() else []


def _assert_password_nowhere(lab: Lab, outcomes: list[CreateOutcome]) -> None:
    """Not in any output, not in any file on either host (the throwaway docker configs
    are gone), not in the build log, sshd's, dockerd's or the registry's logs."""
    for outcome in outcomes:
        assert PASSWORD not in json.dumps(outcome.outputs)
        assert "registry_password" not in outcome.outputs
    files: list[Path] = [lab.registry.log_path, lab.a.log_path, lab.b.log_path]
    for host in lab.hosts:
        files += [p for p in host.dir.rglob("*") if p.is_file() and not p.is_symlink()]
    leaked = [str(p) for p in files if PASSWORD.encode() in p.read_bytes()]
    assert leaked == []


def _push_moving_tag(lab: Lab, tag: str, content: bytes) -> str:
    """Push a new image under ``tag`` from A (a tool other than amdfleet, e.g. a nightly
    CI); returns the digest the registry now holds for the tag."""
    local = f"amdfleet-test/nightly:{uuid.uuid4().hex[:8]}"
    lab.a.import_image(local, {"etc/nightly": content})
    lab.a.cli("tag", local, tag)
    lab.a.cli(
        "login",
        lab.registry.address,
        "--username",
        USER,
        "--password-stdin",
        stdin=PASSWORD.encode(),
    )
    try:
        lab.a.cli("push", tag)
    finally:
        lab.a.cli("logout", lab.registry.address)
        lab.a.cli("image", "rm", tag, local)
    name = tag.split("/", 1)[1].rsplit(":", 1)[0]
    digest = lab.registry.manifest_digest(name, "nightly")
    assert digest is not None
    return digest


@contextlib.contextmanager
def _logged_in(lab: Lab, host: int) -> Iterator[None]:
    """The host's user logged in to the registry with its own docker config."""
    login = f"docker login {lab.registry.address} --username {USER} --password-stdin"
    with lab.hosts.connect(host) as conn:
        conn.run(login, stdin=PASSWORD, timeout=60)
    try:
        yield
    finally:
        with lab.hosts.connect(host) as conn:
            conn.run(f"docker logout {lab.registry.address}", timeout=60)


@contextlib.contextmanager
def _stalling_server(address: str) -> Iterator[str]:
    """An HTTP server on ``address`` that answers a GET with headers and then nothing;
    yields its URL. Stopped (and its connections closed) on exit."""
    server = socket.create_server((address, 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\npartial")
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{port}/stalled"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for conn in held:
            conn.close()
