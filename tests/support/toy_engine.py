"""A fourth engine, as a user would add one: this module, its line in
``amdfleet.engines.REGISTRY`` and one catalog entry.

``toy serve --listen HOST:PORT --model PATH --context N`` with its key in ``TOY_KEY``;
used by tests/unit/test_engines.py to show the engine interface is all the planner and
renderers need.
"""

from __future__ import annotations

from typing import ClassVar

from amdfleet.engines.base import Engine, Launch
from amdfleet.engines.flags import Flags


class Toy(Engine):
    """An engine with its own flag spelling, key variable and readiness path."""

    name: ClassVar[str] = "toy"
    command: ClassVar[tuple[str, ...]] = ("toy", "serve")
    ready_paths: ClassVar[tuple[str, ...]] = ("/ready",)
    parallelism: ClassVar[tuple[str, ...]] = ("tp",)
    multi_node: ClassVar[bool] = False
    cpu: ClassVar[bool] = True
    api_key_env: ClassVar[str | None] = "TOY_KEY"

    def flags(self, launch: Launch) -> Flags:
        """Listen address, model and context, toy-style."""
        return [
            ("--listen", f"{launch.host}:{launch.port}"),
            ("--model", launch.checkpoint),
            ("--context", str(launch.max_model_len)),
        ]


ENGINE = Toy()
