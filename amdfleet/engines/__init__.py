"""Serving engines, one module each (:mod:`.vllm`, :mod:`.sglang`, :mod:`.tgi`).

:data:`REGISTRY` holds every engine by name and :func:`engine` returns one; adding an
engine is a new module here, its line in :data:`REGISTRY`, and its catalog entry
(:data:`amdfleet.catalog.engines.ENGINES`: the data, images and recipes). The catalog
names engines only by name, so it does not import this package.
"""

from __future__ import annotations

from amdfleet.engines import sglang, tgi, vllm
from amdfleet.engines.base import Engine

REGISTRY: dict[str, Engine] = {e.name: e for e in (vllm.ENGINE, sglang.ENGINE, tgi.ENGINE)}
"""Every engine amdfleet runs, by name (the catalog's ``ENGINES`` has the same keys)."""


def engine(name: str) -> Engine:
    """The engine called ``name`` (a key of :data:`REGISTRY`)."""
    return REGISTRY[name]


def tokens_counters() -> tuple[str, ...]:
    """Every engine's generated-tokens counter (:attr:`Engine.tokens_counter`): an engine
    serves its own only, so a watchdog may sum them all without knowing which runs."""
    return tuple(sorted({e.tokens_counter for e in REGISTRY.values() if e.tokens_counter}))


__all__ = ["REGISTRY", "Engine", "engine", "tokens_counters"]
