"""Device facts: whether the GPU device nodes (``/dev/kfd``, ``/dev/dri/renderD*``) exist
and whether the probing user can open them read-write."""

from __future__ import annotations

from amdfleet.remote.facts.registry import Fact, register
from amdfleet.remote.facts.system import parse_line


def parse_ls(text: str) -> tuple[str, ...]:
    """Entry names from ``ls DIR`` (e.g. ``/dev/dri``), sorted."""
    return tuple(sorted(name for name in text.split() if name))


def parse_device_access(text: str) -> tuple[bool, bool]:
    """``(present, accessible)`` from the probe's device check (``rw``/``denied``/``absent``).

    The probe prints ``rw`` when ``test -r`` and ``test -w`` pass on the node(s),
    ``denied`` when they exist but are not both readable and writable.
    """
    word = parse_line(text)
    return word in ("rw", "denied"), word == "rw"


# ------------------------------------------------------------------------- facts

_KFD_ACCESS = (
    "if [ ! -e /dev/kfd ]; then echo absent; "
    "elif [ -r /dev/kfd ] && [ -w /dev/kfd ]; then echo rw; else echo denied; fi"
)
_DRI_ACCESS = (
    'set -- /dev/dri/renderD*; [ -e "$1" ] || { echo absent; exit 0; }; '
    'for node in "$@"; do { [ -r "$node" ] && [ -w "$node" ]; } || { echo denied; exit 0; }; '
    "done; echo rw"
)

KFD = register(Fact("kfd", _KFD_ACCESS, parse_device_access))
DRI_NODES = register(Fact("dri_nodes", "ls /dev/dri", parse_ls))
DRI_ACCESS = register(Fact("dri_access", _DRI_ACCESS, parse_device_access))
