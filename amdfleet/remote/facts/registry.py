"""The fact registry: each fact is a shell command and the pure parser of what it prints.

A fact module defines its facts next to their parsers and registers them with
:func:`register` (pyinfra's model: a fact is a command plus a parser). The probe
(:mod:`amdfleet.remote.facts.probe`) runs every registered command in one script and
hands each parser its command's output. Registration order is the probe's order: the
package imports its fact modules in a fixed order, so it does not depend on who imports
what first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """One fact: ``command`` reads it on a host, ``parse`` reads what the command printed.

    ``command`` is shell text, or a function of the probed disk path for a fact about
    that path. ``gpu_tool`` marks a GPU tool (amd-smi, rocm-smi, rocminfo) that can hang
    on a wedged driver and so gets the probe's longer GPU timeout; ``chained`` marks a fact
    the probe runs in its GPU-source chain (one source only if the one before failed)
    rather than unconditionally.
    """

    name: str
    command: str | Callable[[str], str]
    parse: Callable[[str], T]
    gpu_tool: bool = False
    chained: bool = False

    def command_for(self, disk_path: str) -> str:
        """The shell command, for a probe measuring free space at ``disk_path``."""
        return self.command if isinstance(self.command, str) else self.command(disk_path)


FACTS: dict[str, Fact[Any]] = {}
"""Every registered fact by name, in registration order."""


def register(fact: Fact[T]) -> Fact[T]:
    """Add ``fact`` to :data:`FACTS` and return it; a second fact of the same name is an
    error (its output section would be ambiguous)."""
    if fact.name in FACTS:
        raise ValueError(f"fact {fact.name!r} is registered twice")
    FACTS[fact.name] = fact
    return fact
