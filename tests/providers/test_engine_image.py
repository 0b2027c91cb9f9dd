"""EngineImage staged on a real SSH host by a real Docker engine.

Real: the provider, run by amdfleet's provider plugin over gRPC (``provider_host``); an
SSH host in network namespaces (``hostlab``) with its own /root, /opt and /tmp; that
host's ``docker`` CLI running the commands of :mod:`amdfleet.remote.images` exactly as
the provider sends them; and ``dockerd`` (tests/support/dockerd.py) with its image store
and its builder. The provider's plain ``docker ...`` commands reach the daemon through
the CLI's own config: a docker context made the current one in the host's /root (no
``DOCKER_HOST``).

The seam is the registry: none is reachable, so nothing here pulls. Images are local: a
base image made with ``docker import`` from a tarball built here, tags of it, and builds
``FROM`` it whose steps run no container (``LABEL``; ``COPY`` of a missing file to make a
build fail). A Dockerfile ``FROM`` a missing image is not used: the daemon would then try
the registry (it runs in an empty network namespace, so that would fail before sending a
packet, but the tests do not lean on it).

Replacements are carried out in the engine's order (:func:`_replace`): create the new
resource then delete the old one, or the reverse when Diff sets ``deleteBeforeReplace``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from amdfleet.providers.engine_image import EngineImage, EngineImageProps
from amdfleet.remote.images import DOCKERFILE_LABEL, inspect_command, parse_inspect
from tests.support.dockerd import DockerDaemon, DockerdError, lab_using
from tests.support.engine_log import EngineLog
from tests.support.hostlab import HostLab, LabFactory
from tests.support.prerequisites import missing
from tests.support.pulumi_host import (
    CreateOutcome,
    DiffOutcome,
    ProviderCallError,
    ProviderHost,
    resource_urn,
)

BASE = "amdfleet-test/base:1"
BASE_FILES = {"etc/amdfleet-test-base": b"a local base image: no registry made it\n"}
LABEL = "org.amdfleet.test"
TIMEOUT_S = 120

pytestmark = pytest.mark.netns
URN = resource_urn("image", EngineImage)

TagFactory = Callable[[], str]


@pytest.fixture(scope="module")
def docker() -> Iterator[DockerDaemon]:
    """A private dockerd holding the local base image; stopped (and removed) afterwards."""
    try:
        daemon = DockerDaemon.start()
    except DockerdError as e:
        missing("docker", str(e))
    with daemon:
        daemon.import_image(BASE, BASE_FILES)
        yield daemon


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory, docker: DockerDaemon) -> Iterator[HostLab]:
    """One SSH host whose docker CLI talks to ``docker`` (its current context)."""
    yield from lab_using(hostlab, docker)


@pytest.fixture
def tags(docker: DockerDaemon) -> Iterator[TagFactory]:
    """A factory of fresh image tags; whatever a test left under them, and the untagged
    images its builds left, are removed from the daemon afterwards."""
    made: list[str] = []

    def new() -> str:
        made.append(f"amdfleet-test/engine:{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    for tag in made:
        docker.cli("image", "rm", "--force", tag, check=False)
    docker.cli("image", "prune", "--force")


# -- parse_inspect against the real output -----------------------------------------------


def test_parse_inspect_reads_what_docker_really_prints(docker: DockerDaemon) -> None:
    real = docker.image(BASE)
    assert real is not None
    assert real["RepoDigests"] == []  # a local image: no registry ever named it by digest

    printed = _sh(docker, inspect_command(BASE))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == f'{{"id": "{real["Id"]}", "digests": [], "labels": null}}\n'
    assert parse_inspect(printed.stdout) == {
        "image_id": real["Id"],
        "digest": "",
        "dockerfile_sha256": "",
    }

    absent = _sh(docker, inspect_command("amdfleet-test/absent:1"))
    assert (absent.returncode, absent.stdout) == (1, "\n")  # an empty line on stdout
    assert "No such image: amdfleet-test/absent:1" in absent.stderr
    assert parse_inspect(absent.stdout) is None


# -- an image the host already has ------------------------------------------------------


def test_an_image_already_on_the_host_is_used_and_left_on_delete(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    tag = tags()
    docker.cli("tag", BASE, tag)
    real = docker.image(tag)
    assert real is not None
    urn = provider_host.urn("image-present", EngineImage)

    created = _create(provider_host, _props(lab, tag), urn)

    outs = created.outputs
    assert created.id == f"host0:{tag}"
    assert (outs["created"], outs["image_id"], outs["digest"]) == (False, real["Id"], "")
    provider_host.delete(created.id, outs, urn=urn)
    assert docker.image(tag) == real  # not this resource's to remove
    read = provider_host.read(created.id, outs, urn=urn)
    assert (read.id, read.outputs["image_id"], read.outputs["digest"]) == (
        created.id,
        real["Id"],
        "",
    )


# -- building from a Dockerfile ----------------------------------------------------------


def test_a_dockerfile_is_built_on_the_host_and_removed_on_delete(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    tag, token = tags(), uuid.uuid4().hex
    build_dir = f"/opt/amdfleet/build-{token[:8]}-image"
    urn = provider_host.urn("image-built", EngineImage)
    props = _props(lab, tag, dockerfile=_dockerfile(token), build_dir=build_dir)

    created = _create(provider_host, props, urn)

    real = docker.image(tag)
    assert real is not None, "the build did not tag the image"
    base = docker.image(BASE)
    assert base is not None
    assert real["Config"]["Labels"] == {LABEL: token, DOCKERFILE_LABEL: props["dockerfile_hash"]}
    assert real["RootFS"] == base["RootFS"]  # FROM the local base: its layers, no others
    outs = created.outputs
    assert (outs["created"], outs["image_id"], outs["digest"]) == (True, real["Id"], "")
    assert not lab[0].path(build_dir).exists()  # the build context is gone from the host
    assert lab[0].path(build_dir).parent.is_dir()  # (it was made in the host's own /opt)

    provider_host.delete(created.id, outs, urn=urn)
    assert docker.image(tag) is None
    assert docker.image(real["Id"]) is None  # removed, not merely untagged
    provider_host.delete(created.id, outs, urn=urn)  # twice: still fine
    read = provider_host.read(created.id, outs, urn=urn)
    assert (read.outputs["image_id"], read.outputs["digest"]) == ("", "")


def test_a_tag_built_from_another_dockerfile_is_rebuilt_not_adopted(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    """The default tag names the refs, not the Dockerfile: a host holding the tag from
    an older Dockerfile (or from someone else) gets this Dockerfile's build."""
    tag, first, second = tags(), uuid.uuid4().hex, uuid.uuid4().hex
    docker.cli("tag", BASE, tag)  # the tag exists, built by nobody we know
    urn = provider_host.urn("image-stale", EngineImage)
    created = _create(provider_host, _props(lab, tag, dockerfile=_dockerfile(first)), urn)
    real = docker.image(tag)
    assert real is not None and real["Config"]["Labels"][LABEL] == first
    assert created.outputs["created"] is True

    again = _create(provider_host, _props(lab, tag, dockerfile=_dockerfile(first)), urn)
    assert again.outputs["created"] is False  # the same Dockerfile's build is adopted
    assert again.outputs["image_id"] == real["Id"]

    rebuilt = _create(provider_host, _props(lab, tag, dockerfile=_dockerfile(second)), urn)
    newer = docker.image(tag)
    assert newer is not None and newer["Config"]["Labels"][LABEL] == second
    assert rebuilt.outputs["created"] is True and rebuilt.outputs["image_id"] == newer["Id"]
    provider_host.delete(rebuilt.id, rebuilt.outputs, urn=urn)
    assert docker.image(tag) is None


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            "COPY not-in-the-context /x",
            [
                "Step 2/3 : COPY not-in-the-context /x",  # step 3: the --label amdfleet adds
                "COPY failed: file not found in build context or excluded by .dockerignore: "
                "stat not-in-the-context: file does not exist",
            ],
        ),
        (
            "BOGUS instruction",
            [
                "Error response from daemon: dockerfile parse error line 2: "
                "unknown instruction: BOGUS"
            ],
        ),
    ],
    ids=["failing-step", "parse-error"],
)
def test_a_failing_build_reports_its_output_and_leaves_nothing(
    provider_host: ProviderHost,
    lab: HostLab,
    docker: DockerDaemon,
    tags: TagFactory,
    step: str,
    expected: list[str],
) -> None:
    tag = tags()
    build_dir = f"/opt/amdfleet/fail-{uuid.uuid4().hex[:8]}-image"
    before = docker.cli("image", "ls", "--all", "--quiet", "--no-trunc").stdout
    props = _props(lab, tag, dockerfile=f"FROM {BASE}\n{step}\n", build_dir=build_dir)

    with pytest.raises(ProviderCallError) as info:
        _create(provider_host, props, provider_host.urn("image-fail", EngineImage))

    message = info.value.message
    label = f"{DOCKERFILE_LABEL}={props['dockerfile_hash']}"
    command = f"docker build -t {tag} --label {label} -f {build_dir}/Dockerfile {build_dir}"
    assert message.startswith(
        f"amdfleet.errors.RemoteCommandError: [host0] command exited 1: {command}\n"
        "  last lines of output:\n"
    )
    tail = [line.removeprefix("    | ") for line in message.splitlines()]
    assert [line for line in tail if line in expected] == expected
    assert not lab[0].path(build_dir).exists()
    assert docker.image(tag) is None
    assert docker.cli("image", "ls", "--all", "--quiet", "--no-trunc").stdout == before


# -- refresh and replacement -------------------------------------------------------------


def test_an_image_removed_behind_the_providers_back_is_rebuilt_by_a_replacement(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    tag, token = tags(), uuid.uuid4().hex
    urn = provider_host.urn("image-gone", EngineImage)
    props = _props(lab, tag, dockerfile=_dockerfile(token), build_dir="/opt/amdfleet/gone-image")
    created = _create(provider_host, props, urn)
    docker.cli("image", "rm", tag)

    read = provider_host.read(created.id, created.outputs, urn=urn)
    assert read.id == created.id
    assert (read.outputs["image_id"], read.outputs["digest"]) == ("", "")
    news = provider_host.check(props, urn=urn).inputs
    diff = provider_host.diff(created.id, read.outputs, news, urn=urn)
    assert (diff.changes, diff.replaces) == (True, ["image"])

    replaced = _replace(provider_host, urn, created.id, read.outputs, news, diff)

    real = docker.image(tag)
    assert real is not None, "the replacement left no image"
    assert real["Config"]["Labels"] == {LABEL: token, DOCKERFILE_LABEL: props["dockerfile_hash"]}
    assert (replaced.outputs["created"], replaced.outputs["image_id"]) == (True, real["Id"])


def test_a_new_dockerfile_replaces_the_image_under_the_same_tag(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    tag = tags()
    urn = provider_host.urn("image-rebuilt", EngineImage)
    build_dir = "/opt/amdfleet/rebuilt-image"
    first = _create(
        provider_host, _props(lab, tag, dockerfile=_dockerfile("one"), build_dir=build_dir), urn
    )

    news_props = _props(lab, tag, dockerfile=_dockerfile("two"), build_dir=build_dir)
    news = provider_host.check(news_props, urn=urn).inputs
    diff = provider_host.diff(first.id, first.outputs, news, urn=urn)
    assert (diff.changes, diff.replaces) == (True, ["dockerfile_hash"])

    second = _replace(provider_host, urn, first.id, first.outputs, news, diff)

    real = docker.image(tag)
    assert real is not None, "the replacement left no image"
    assert real["Config"]["Labels"] == {
        LABEL: "two",
        DOCKERFILE_LABEL: news_props["dockerfile_hash"],
    }
    assert (second.outputs["created"], second.outputs["image_id"]) == (True, real["Id"])
    assert docker.image(first.outputs["image_id"]) is None  # the first build is gone


def test_diff_replaces_on_another_image_or_dockerfile(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    tag = tags()
    docker.cli("tag", BASE, tag)
    urn = provider_host.urn("image-diff", EngineImage)
    created = _create(provider_host, _props(lab, tag), urn)

    def diff(image: str = tag, **changes: Any) -> tuple[bool | None, list[str], bool]:
        news = provider_host.check(_props(lab, image, **changes), urn=urn).inputs
        outcome = provider_host.diff(created.id, created.outputs, news, urn=urn)
        return outcome.changes, outcome.replaces, outcome.delete_before_replace

    assert diff() == (False, [], False)
    assert diff(timeout_s=60) == (False, [], False)
    # Another tag can exist beside the old one: create first, then delete the old.
    assert diff("amdfleet-test/engine:other") == (True, ["image"], False)
    # The same tag cannot belong to two resources at once: delete the old one first.
    built = {"dockerfile": _dockerfile("x"), "build_dir": "/opt/amdfleet/x-image"}
    assert diff(**built) == (True, ["dockerfile_hash"], True)
    renamed = lab.host_target(0).model_copy(update={"name": "host0-renamed"})
    assert diff(host=renamed) == (True, ["host"], True)
    assert diff(keep_on_delete=True) == (True, [], False)


def test_keep_on_delete_changes_in_place_and_keeps_a_built_image(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tags: TagFactory
) -> None:
    tag = tags()
    urn = provider_host.urn("image-keep", EngineImage)
    built = {"dockerfile": _dockerfile("keep"), "build_dir": "/opt/amdfleet/keep-image"}
    created = _create(provider_host, _props(lab, tag, **built), urn)

    news = provider_host.check(_props(lab, tag, keep_on_delete=True, **built), urn=urn).inputs
    diff = provider_host.diff(created.id, created.outputs, news, urn=urn)
    assert (diff.changes, diff.replaces) == (True, [])
    updated = provider_host.update(created.id, created.outputs, news, urn=urn)
    assert updated["keep_on_delete"] is True
    assert updated["image_id"] == created.outputs["image_id"]

    provider_host.delete(created.id, updated, urn=urn)
    real = docker.image(tag)
    assert real is not None and real["Id"] == created.outputs["image_id"]


# -- helpers -------------------------------------------------------------------------------


def _dockerfile(token: str) -> str:
    """A Dockerfile that builds with no registry and no container run."""
    return f"FROM {BASE}\nLABEL {LABEL}={token}\n"


def _props(
    lab: HostLab,
    image: str,
    *,
    dockerfile: str | None = None,
    build_dir: str = "/opt/amdfleet/unused-image",
    **overrides: Any,
) -> dict[str, Any]:
    """Props as the Deployment component builds them."""
    fields: dict[str, Any] = {
        "host": lab.host_target(0),
        "image": image,
        "dockerfile": dockerfile,
        "dockerfile_hash": hashlib.sha256(dockerfile.encode()).hexdigest() if dockerfile else None,
        "build_dir": build_dir,
        "timeout_s": TIMEOUT_S,
        "keep_on_delete": False,
    }
    props = EngineImageProps(**{**fields, **overrides})
    return props.to_inputs()


def _create(provider_host: ProviderHost, props: dict[str, Any], urn: str) -> CreateOutcome:
    checked = provider_host.check(props, urn=urn)
    assert checked.failures == []
    return provider_host.create(checked.inputs, urn=urn)


def _replace(
    provider_host: ProviderHost,
    urn: str,
    old_id: str,
    olds: dict[str, Any],
    news: dict[str, Any],
    diff: DiffOutcome,
) -> CreateOutcome:
    """A replacement in the engine's order: the new resource first and then the old one
    deleted, unless Diff asked to delete before replacing."""
    if diff.delete_before_replace:
        provider_host.delete(old_id, olds, urn=urn)
        return provider_host.create(news, urn=urn)
    created = provider_host.create(news, urn=urn)
    provider_host.delete(old_id, olds, urn=urn)
    return created


def _sh(docker: DockerDaemon, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` through ``sh -c`` (as the host's shell runs it) against ``docker``."""
    return subprocess.run(
        ["sh", "-c", command], env=docker.env, capture_output=True, text=True, timeout=60
    )


# -- progress ----------------------------------------------------------------------------


def test_a_build_shows_docker_s_output_and_notes_what_it_made(
    provider_host: ProviderHost,
    engine_log: EngineLog,
    lab: HostLab,
    docker: DockerDaemon,
    tags: TagFactory,
) -> None:
    """Through the plugin started with an engine address, as the Pulumi CLI starts it."""
    tag, token = tags(), uuid.uuid4().hex
    urn = provider_host.urn("image-progress", EngineImage)
    props = _props(lab, tag, dockerfile=_dockerfile(token), build_dir="/opt/amdfleet/p-image")

    created = _create(provider_host, props, urn)
    provider_host.delete(created.id, created.outputs, urn=urn)

    statuses = engine_log.messages(urn, ephemeral=True)
    assert statuses[:2] == [f"looking for {tag} on the host", f"building {tag}"]
    lines = statuses[2:-1]  # docker's output, the first line at once
    assert lines and all(re.match(rf"building {tag} \(\d+ s\): \S", s) for s in lines)
    assert statuses[-1] == f"removing {tag}"  # the delete
    short_id = created.outputs["image_id"][: len("sha256:") + 12]
    [note] = engine_log.messages(urn, ephemeral=False)
    assert re.fullmatch(rf"built {tag} in \d+ s \({short_id}\)", note)
