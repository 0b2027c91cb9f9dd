"""Serving engines, one module each (:mod:`.vllm`, :mod:`.sglang`, :mod:`.tgi`).

:func:`engine` returns the :class:`~amdfleet.engines.base.Engine` for a name; which
module implements a name is catalog data (:data:`amdfleet.catalog.engines.ENGINES`), so
adding an engine is a new module here plus its catalog entry.
"""

from __future__ import annotations

import importlib

from amdfleet.catalog.engines import ENGINES
from amdfleet.engines.base import Engine


def engine(name: str) -> Engine:
    """The engine called ``name`` (a key of the catalog's ``ENGINES``)."""
    module = importlib.import_module(ENGINES[name].module)
    found: Engine = module.ENGINE
    return found


__all__ = ["Engine", "engine"]
