"""A tiny Pulumi program for tests/program/test_postgres_state.py: one resource whose
create holds until the test opens a gate, so an ``up`` is surely in progress (and holds
the stack's lock) while the test starts another.

Each run of the program appends its PID to the ``runs`` file, and each create of the
resource appends to the ``creates`` file, so a test sees whether a refused ``up`` ran the
program or touched the resource. The create writes the ``started`` file, then waits for
the ``release`` file (polled; it fails after ``holdSeconds``, 120 by default, so a test
that dies never leaves an ``up`` hanging).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class GateProvider(ResourceProvider):
    """Created once the gate opens; deleted at once."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        Path(props["started"]).write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + float(props["hold_seconds"])
        while not Path(props["release"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gate {props['release']} never opened")
            time.sleep(0.05)
        with Path(props["creates"]).open("a") as log:
            log.write(f"created by {os.getpid()}\n")
        return CreateResult(id_="gate", outs=props)

    def delete(self, id: str, props: dict[str, Any]) -> None:
        return None


class Gate(Resource):
    def __init__(self, name: str, props: dict[str, Any]) -> None:
        super().__init__(GateProvider(), name, props)


config = pulumi.Config()
with Path(config.require("runs")).open("a") as runs:
    runs.write(f"{os.getpid()}\n")
Gate(
    "gate",
    {
        "started": config.require("started"),
        "release": config.require("release"),
        "creates": config.require("creates"),
        "hold_seconds": config.get_float("holdSeconds") or 120.0,
    },
)
pulumi.export("gate", "open")
