"""The docker runtime's supervisor: dockerd's restart policy, with a real daemon.

Real: the EngineService provider through amdfleet's provider plugin, an SSH host in
network namespaces whose own ``docker`` CLI reaches ``dockerd`` (tests/support/dockerd.py)
through its current context, the rendered docker-runtime launch script as the provider
runs it (``docker run --detach --restart on-failure:5 --pull=never ...``, with amdfleet's
sh entrypoint as the container's PID 1 and the engine its child), and a container
of an image made here with ``docker import``: ``/bin/sh``, ``sleep`` and the C library
copied from this machine, and a ``vllm`` that prints its arguments and waits for
SIGTERM. Nothing is pulled. The container runs in the daemon's own empty network
namespace (``--network host`` there), so nothing outside could reach a server in it: the
node is deployed as a worker (it serves no API), which the provider counts as started
once it has stayed up.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amdfleet.components.props import engine_service_props
from amdfleet.config import parse_stack
from amdfleet.plan import plan
from amdfleet.providers.engine_service import EngineService
from amdfleet.render import CONTAINER_SECRETS, SECRETS_LOADER
from tests.support.dockerd import DockerDaemon, DockerdError, lab_using
from tests.support.hostlab import SUBNET_PREFIX, HostLab, LabFactory
from tests.support.models import TINY_ARCHITECTURE
from tests.support.openai_server import OpenAIServer
from tests.support.prerequisites import missing
from tests.support.pulumi_host import ProviderHost, resource_urn, secret
from tests.support.waiting import wait_until

IMAGE = "amdfleet-test/engine-runtime:1"
# PID 1 of its container: it handles SIGTERM itself (the kernel ignores unhandled signals
# there), so `docker stop` ends it at once.
ENGINE = b"""#!/bin/sh
echo "engine in a container: $*"
echo "engine API key: ${#VLLM_API_KEY} characters"
trap 'echo "engine stopping"; exit 0' TERM
sleep 100000 & wait $!
"""
_BINARIES = ("/usr/bin/dash", "/usr/bin/sleep")
_LIBRARIES = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")

pytestmark = pytest.mark.netns
URN = resource_urn("engine-docker", EngineService)


@pytest.fixture(scope="module")
def docker() -> Iterator[DockerDaemon]:
    """A private dockerd holding the engine image; stopped (and removed) afterwards."""
    absent = [p for p in (*_BINARIES, *_LIBRARIES) if not Path(p).exists()]
    if absent:
        pytest.skip(f"cannot assemble the engine image here: {absent} missing")
    try:
        daemon = DockerDaemon.start()
    except DockerdError as e:
        missing("docker", str(e))
    files = {
        "bin/sh": Path("/usr/bin/dash").read_bytes(),
        "bin/sleep": Path("/usr/bin/sleep").read_bytes(),
        "usr/bin/vllm": ENGINE,
        **{lib.lstrip("/"): Path(lib).read_bytes() for lib in _LIBRARIES},
    }
    with daemon:
        # The ELF interpreter must be executable too.
        runnable = {"bin/sh", "bin/sleep", "usr/bin/vllm", _LIBRARIES[1].lstrip("/")}
        daemon.import_image(IMAGE, files, executables=runnable)
        yield daemon


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory, docker: DockerDaemon) -> Iterator[HostLab]:
    """One SSH host whose docker CLI talks to ``docker`` (its current context)."""
    yield from lab_using(hostlab, docker)


def _props(lab: HostLab, name: str, cache_dir: Path) -> dict[str, Any]:
    host = lab.host_props(0)
    spec = parse_stack(
        name,
        {
            "fleet": {"hosts": [{k: v for k, v in host.items() if k != "connection"}]},
            "topology": {"accelerator": "cpu", "gpus_per_node": 1},
            "model": {
                "id": "tiny",
                "checkpoint": "org/tiny",
                "served_name": "tiny",
                "architecture": TINY_ARCHITECTURE,
            },
            "engine": {
                "runtime": "docker",
                "image": IMAGE,
                "network": "host",
                "startup_timeout_s": 30,
            },
            "serving": {"host": lab.target(0).address, "port": 18081, "max_model_len": 2048},
            # Mounted by dockerd, which resolves the path on this machine.
            "weights": {"cache_dir": str(cache_dir)},
            "verification": {"enabled": False},  # the provider alone, no gate
        },
    )
    deployment = plan(spec)
    args = engine_service_props(
        deployment,
        deployment.head,
        lab.host_target(0),
        secret({"AMDFLEET_API_KEY": "k-docker", "VLLM_API_KEY": "k-docker"}),
    )
    props = args.inputs()
    props["readiness"]["serves_api"] = False  # see the module docstring
    return props


def _inspect(docker: DockerDaemon, container: str) -> dict[str, Any] | None:
    result = docker.cli("container", "inspect", container, check=False)
    if result.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found[0]


def _state(docker: DockerDaemon, container: str) -> dict[str, Any]:
    found = _inspect(docker, container)
    assert found is not None, f"container {container} is gone"
    return found


@pytest.fixture
def engine_dir(lab: HostLab) -> Iterator[None]:
    """The stack's directory as dockerd sees it. On a real host dockerd and the launch
    script share one file tree; here dockerd runs on this machine while the lab host has
    its own /opt, so this machine's /opt/amdfleet/dock is, for the test, a link to the lab
    host's (removed afterwards)."""
    link = Path("/opt/amdfleet/dock")
    if link.exists() or link.is_symlink():
        pytest.fail(f"{link} exists on this machine: refusing to replace it")
    made_parent = not link.parent.exists()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(lab.hosts[0].path(str(link)))
    try:
        yield
    finally:
        link.unlink()
        if made_parent:
            link.parent.rmdir()


@pytest.mark.usefixtures("engine_dir")
def test_dockerd_restarts_a_killed_engine_and_delete_removes_the_container(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tmp_path: Path
) -> None:
    urn = provider_host.urn("engine-docker", EngineService)
    checked = provider_host.check(_props(lab, "dock", tmp_path / "hf"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    container = checked["container"]
    try:
        assert container == "amdfleet-dock" and created.outputs["running"] is True
        first = _state(docker, container)
        assert first["HostConfig"]["RestartPolicy"] == {
            "Name": "on-failure",
            "MaximumRetryCount": 5,
        }
        assert first["HostConfig"]["AutoRemove"] is False
        assert (first["State"]["Running"], first["RestartCount"]) == (True, 0)
        # The secrets are a read-only mount read by the sh loader, not container config:
        # `docker inspect` shows no key, while the engine has it in its environment.
        assert first["Config"]["Entrypoint"] == ["sh"]
        assert first["Config"]["Cmd"][:2] == ["-c", SECRETS_LOADER]
        assert first["Config"]["Cmd"][2:5] == ["sh", "vllm", "serve"]
        assert "k-docker" not in json.dumps(first)
        (mount,) = [m for m in first["Mounts"] if m["Destination"] == CONTAINER_SECRETS]
        assert mount["RW"] is False
        wait_until(
            lambda: "engine API key: 8 characters" in docker.cli("logs", container).stdout,
            10,
            "the engine's line saying it has the key",
        )

        os.kill(first["State"]["Pid"], signal.SIGKILL)  # the engine: the container's main process
        wait_until(
            lambda: (
                _state(docker, container)["RestartCount"] == 1
                and _state(docker, container)["State"]["Running"]
            ),
            30,
            "dockerd to restart the killed engine",
        )
        again = _state(docker, container)
        assert again["State"]["Pid"] != first["State"]["Pid"]
        started = "engine in a container: serve org/tiny"
        wait_until(  # the restarted engine prints its line a moment after it runs
            lambda: docker.cli("logs", container).stdout.count(started) == 2,
            10,
            "the restarted engine's first log line",
        )

        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is True

        # `docker stop` is a requested stop: the entrypoint passes SIGTERM on, the engine
        # exits 0, and dockerd leaves the container stopped (it would show "restarting").
        docker.cli("stop", "--time", "10", container)
        stopped = _state(docker, container)
        assert (stopped["State"]["Status"], stopped["RestartCount"]) == ("exited", 1)
        assert stopped["State"]["ExitCode"] == 0
        assert "engine stopping" in docker.cli("logs", container).stdout
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        assert read.outputs["not_ready"].startswith("the engine is not running\n")  # no give-up
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _inspect(docker, container) is None
    read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
    assert read.outputs["running"] is False


@pytest.mark.usefixtures("engine_dir")
def test_dockerd_restarts_an_engine_that_exits_for_any_reason_then_gives_up(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon, tmp_path: Path
) -> None:
    """dockerd's ``on-failure`` restarts non-zero exits only; amdfleet's entrypoint turns
    an engine's unrequested exit 0 into status 75 and logs each exit with its status, so
    an engine that stops cleanly, is killed or is ended by a signal is restarted, at most
    5 times; then dockerd gives up and refresh says so."""
    urn = provider_host.urn("engine-docker-any", EngineService)
    checked = provider_host.check(_props(lab, "dock", tmp_path / "hf"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    container = checked["container"]
    try:
        # SIGTERM to the engine alone (not `docker stop`): its trap exits 0.
        _end_engine(docker, container, signal.SIGTERM, restarts=1)
        logs = docker.cli("logs", container)
        assert (
            "amdfleet-entrypoint: engine exited with status 0 without being asked to stop; "
            "exiting 75 so that dockerd restarts it"
        ) in logs.stderr
        _end_engine(docker, container, signal.SIGKILL, restarts=2)
        logs = docker.cli("logs", container)
        assert "amdfleet-entrypoint: engine exited with status 137 (signal 9)" in logs.stderr
        for restarts in (3, 4, 5):
            _end_engine(docker, container, signal.SIGKILL, restarts=restarts)
        # The sixth unrequested exit is one too many: dockerd leaves it stopped.
        wait_until(lambda: _children(docker, container), 10, "the entrypoint to start the engine")
        os.kill(_engine_pid(docker, container), signal.SIGKILL)
        wait_until(
            lambda: _state(docker, container)["State"]["Status"] == "exited",
            30,
            "dockerd to give up after 5 restarts",
        )
        assert _state(docker, container)["RestartCount"] == 5
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        assert read.outputs["not_ready"].startswith(
            "the engine is not running: dockerd gave up on container amdfleet-dock after 5 "
            "restarts (on-failure:5); the engine last exited with status 137\n"
        )
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _inspect(docker, container) is None


def _engine_pid(docker: DockerDaemon, container: str) -> int:
    """The engine: the only child of the container's PID 1 (amdfleet's entrypoint)."""
    children = _children(docker, container)
    assert len(children) == 1, (children, docker.cli("logs", container))
    return children[0]


def _children(docker: DockerDaemon, container: str) -> list[int]:
    """The children of the container's main process (none while it is not running)."""
    main = _state(docker, container)["State"]["Pid"]
    try:
        return [int(c) for c in Path(f"/proc/{main}/task/{main}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _end_engine(docker: DockerDaemon, container: str, sig: signal.Signals, restarts: int) -> None:
    """End the running engine with ``sig`` and wait until dockerd has restarted it."""
    wait_until(lambda: _children(docker, container), 10, "the entrypoint to start the engine")
    os.kill(_engine_pid(docker, container), sig)
    wait_until(
        lambda: (
            _state(docker, container)["RestartCount"] == restarts
            and _state(docker, container)["State"]["Running"]
        ),
        30,
        f"dockerd to restart the engine ({restarts} of 5)",
    )


# The watchdog's probes of the head (tests/support/openai_server.py serves this model).
HEAD_MODEL = "stub-model"
DOCK_DIR = "/opt/amdfleet/dock"
WATCHDOG_TRIP = "watchdog: 3 one-token completions in a row failed (last: status 500 within 15 s)"


@pytest.fixture
def head(lab: HostLab) -> Iterator[OpenAIServer]:
    """The head's API as a real HTTP server on the lab's bridge address, which the lab
    host reaches (the container cannot: it runs in the daemon's own empty netns)."""
    with OpenAIServer(host=f"{SUBNET_PREFIX}.{lab.subnet}.1") as server:
        yield server


def _worker_props(lab: HostLab, cache_dir: Path, head: OpenAIServer) -> dict[str, Any]:
    """A docker node whose readiness check, and so its watchdog, probes ``head``: what a
    cluster worker's watchdog probes (engine_cluster._watchdog_checks)."""
    props = _props(lab, "dock", cache_dir)
    props["readiness"].update(serves_api=True, base_url=head.url, served_name=HEAD_MODEL)
    return props


def _watchdog_pid(lab: HostLab) -> int | None:
    path = lab.hosts[0].path(f"{DOCK_DIR}/watchdog.pid")
    return int(path.read_text()) if path.exists() else None


def _served(lab: HostLab) -> bool:
    return lab.hosts[0].path(f"{DOCK_DIR}/engine.served").exists()


@pytest.mark.usefixtures("engine_dir")
def test_the_host_watchdog_restarts_the_container_while_the_head_fails_then_dockerd_gives_up(
    provider_host: ProviderHost,
    lab: HostLab,
    docker: DockerDaemon,
    head: OpenAIServer,
    tmp_path: Path,
) -> None:
    """The node's watchdog runs on the lab host beside the container and probes the head's
    API (a real HTTP server the test controls). Each time the head answers completions
    with HTTP 500 after having answered, the watchdog logs why and sends the entrypoint
    SIGUSR1 (``docker kill --signal``); the engine stops, the container exits 75 and
    dockerd restarts it under ``on-failure:5`` (RestartCount grows: never a manual stop).
    The watchdog keeps watching each new start, which serves again once the head answers.
    The sixth stop is one too many: dockerd leaves the container exited, the watchdog
    exits with nothing left to watch, and refresh says why, with the watchdog's reason."""
    urn = provider_host.urn("engine-docker-watchdog", EngineService)
    checked = provider_host.check(_worker_props(lab, tmp_path / "hf", head), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    container = checked["container"]
    try:
        assert created.outputs["running"] is True
        assert _served(lab)  # the deploy's completion counts as the first good answer
        watchdog = _watchdog_pid(lab)
        assert watchdog is not None and lab.alive(0, watchdog)
        assert _state(docker, container)["Config"]["StopSignal"] == "TERM"
        for restarts in range(1, 6):
            head.script.fault = "http500"
            wait_until(
                lambda n=restarts: (  # type: ignore[misc]
                    _state(docker, container)["RestartCount"] == n
                    and _state(docker, container)["State"]["Running"]
                ),
                60,
                f"the watchdog to stop the engine and dockerd to restart it ({restarts} of 5)",
            )
            # The watchdog sees the new start (it drops the served mark), and the new start
            # serves once the head answers again.
            wait_until(lambda: not _served(lab), 20, "the watchdog to see dockerd's new start")
            head.script.fault = None
            wait_until(lambda: _served(lab), 20, "the new start's first answered probe")
            assert _watchdog_pid(lab) == watchdog and lab.alive(0, watchdog)
        logs = docker.cli("logs", container).stderr
        assert logs.count("amdfleet-entrypoint: the watchdog on the host stopped the engine") == 5
        assert "(it exited with status 0); exiting 75 so that dockerd restarts it" in logs
        trips = lab.hosts[0].path(f"{DOCK_DIR}/watchdog.log").read_text()
        assert trips.count(f"amdfleet-supervisor: {WATCHDOG_TRIP}; stopping the engine") == 5

        head.script.fault = "http500"
        wait_until(
            lambda: _state(docker, container)["State"]["Status"] == "exited",
            60,
            "dockerd to give up after the watchdog's sixth stop",
        )
        assert _state(docker, container)["RestartCount"] == 5
        wait_until(lambda: not lab.alive(0, watchdog), 20, "the watchdog to exit")
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        not_ready = read.outputs["not_ready"]
        assert not_ready.startswith(
            "the engine is not running: dockerd gave up on container amdfleet-dock after 5 "
            "restarts (on-failure:5); the engine last exited with status 75; the watchdog's "
            f"last stop: {WATCHDOG_TRIP}\n"
        )
        assert "amdfleet-entrypoint: the watchdog on the host stopped the engine" in not_ready
        assert f"| amdfleet-supervisor: {WATCHDOG_TRIP}; stopping the engine" in not_ready
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _inspect(docker, container) is None


@pytest.mark.usefixtures("engine_dir")
def test_delete_stops_the_host_watchdog_before_the_container(
    provider_host: ProviderHost,
    lab: HostLab,
    docker: DockerDaemon,
    head: OpenAIServer,
    tmp_path: Path,
) -> None:
    """amdfleet's stop ends the watchdog (by its pid file) before ``docker stop``: the
    watchdog process is gone, and it never took the requested stop for a failure."""
    urn = provider_host.urn("engine-docker-watchdog-delete", EngineService)
    checked = provider_host.check(_worker_props(lab, tmp_path / "hf", head), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    container = checked["container"]
    watchdog = _watchdog_pid(lab)
    try:
        assert watchdog is not None and lab.alive(0, watchdog)
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _inspect(docker, container) is None
    assert not lab.alive(0, watchdog)
    assert not lab.hosts[0].path(DOCK_DIR).exists()
