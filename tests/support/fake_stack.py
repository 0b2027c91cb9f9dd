"""Stacks whose engine is tests/support/fake_engine.py, on lab hosts: for the engine
providers' tests (EngineService on one host, EngineCluster on two)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from amdfleet.config import parse_stack
from amdfleet.plan import DeploymentPlan, plan
from tests.support.hostlab import HostLab
from tests.support.models import TINY_ARCHITECTURE

FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine.py"


def install_fake_engine(lab: HostLab) -> None:
    """Copy the fake engine into every lab host as /opt/fake/vllm (copied: the repository
    may live under /tmp, which each host has its own)."""
    for host in lab:
        engine = host.path("/opt/fake/fake_engine.py")
        engine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FAKE_ENGINE, engine)
        wrapper = host.path("/opt/fake/vllm")
        wrapper.write_text('#!/bin/sh\nexec /usr/bin/python3 /opt/fake/fake_engine.py "$@"\n')
        wrapper.chmod(0o755)


def fake_engine_plan(
    lab: HostLab, name: str, port: int, *, nodes: int = 1, env: dict[str, str], **sections: Any
) -> DeploymentPlan:
    """The plan of stack ``name``: the fake engine (process runtime, 30 s to start) on lab
    hosts 0..nodes-1, serving on host 0's address at ``port``, no verification;
    ``FAKE_ENGINE_RECORD`` is ``/tmp/<name>.json`` on each host. ``sections`` are added."""
    hosts = [lab.host_target(i).model_dump(exclude={"connection"}) for i in range(nodes)]
    return plan(
        parse_stack(
            name,
            {
                "fleet": {"hosts": hosts},
                "topology": {"accelerator": "cpu", "nodes": nodes, "gpus_per_node": 1},
                "model": {
                    "id": "tiny",
                    "checkpoint": "/models/tiny",
                    "served_name": "tiny",
                    "architecture": TINY_ARCHITECTURE,
                },
                "engine": {
                    "runtime": "process",
                    "executable": "/opt/fake/vllm",
                    "startup_timeout_s": 30,
                    "extra_env": {"FAKE_ENGINE_RECORD": f"/tmp/{name}.json", **env},
                },
                "serving": {"host": lab.target(0).address, "port": port, "max_model_len": 2048},
                "weights": {"local_path": "/models/tiny"},
                "verification": {"enabled": False},  # the provider alone, no gate
                **sections,
            },
        )
    )
