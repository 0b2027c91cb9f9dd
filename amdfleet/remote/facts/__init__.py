"""Host facts: typed records, and the facts that fill them, each a shell command beside
the pure parser of what it prints (pyinfra's model).

Every ``parse_*`` function takes the text one command printed and returns a value. None
of them does I/O and none raises on unknown, truncated or garbled input: what cannot be
read comes back as ``None``, ``""``, ``False`` or an empty tuple, so a host without
ROCm (a CPU test box) or with an older tool simply yields fewer facts. The preflight
checks (:mod:`amdfleet.remote.preflight`) decide what a missing fact means.

Modules: ``records`` (:class:`HostFacts` and its parts), ``registry`` (:class:`Fact` and
the registry), one module per domain holding its facts and parsers (``system``, ``net``,
``docker``, ``devices``, ``rocm``, ``gpus``), ``values`` (the helpers the parsers share)
and ``probe`` (one script running every registered fact, and the assembly of its output
into :class:`HostFacts`).
"""

from __future__ import annotations

# The domain modules register their facts on import; importing them here, in this order,
# makes the registry's order (the probe script's order) the same whoever imports first.
# isort: off
from amdfleet.remote.facts import system as system
from amdfleet.remote.facts import net as net
from amdfleet.remote.facts import docker as docker
from amdfleet.remote.facts import devices as devices
from amdfleet.remote.facts import rocm as rocm
from amdfleet.remote.facts import gpus as gpus

# isort: on
from amdfleet.remote.facts.records import GpuFacts, HostFacts, NetInterface
from amdfleet.remote.facts.registry import Fact

__all__ = ["Fact", "GpuFacts", "HostFacts", "NetInterface"]
