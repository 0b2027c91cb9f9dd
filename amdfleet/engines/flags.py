"""Engine command-line flags as ordered ``(name, value)`` pairs, and how layers merge.

A flag's value is ``None`` for a switch (``--trust-remote-code``). Layers merge in order
(generated flags, then recipe flags, then the stack's ``engine.extra_args``): a later
layer replaces an earlier value of the same flag in place, so the command line keeps a
stable order and the stack always has the last word.
"""

from __future__ import annotations

from collections.abc import Iterable

Flags = list[tuple[str, str | None]]


def parse_flags(tokens: Iterable[str]) -> Flags:
    """``["--a", "1", "--b=2", "--c"]`` → ``[("--a", "1"), ("--b", "2"), ("--c", None)]``."""
    flags: Flags = []
    items = list(tokens)
    i = 0
    while i < len(items):
        token = items[i]
        if "=" in token and token.startswith("--"):
            name, _, value = token.partition("=")
            flags.append((name, value))
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            flags.append((token, items[i + 1]))
            i += 1
        else:
            flags.append((token, None))
        i += 1
    return flags


def merge_flags(*layers: Flags) -> Flags:
    """Merge layers; ``--max_model_len`` and ``--max-model-len`` are the same flag."""
    merged: dict[str, str | None] = {}
    for layer in layers:
        for name, value in layer:
            merged[canonical_flag(name)] = value
    return list(merged.items())


def flatten(flags: Flags) -> tuple[str, ...]:
    """The flags as argv words."""
    out: list[str] = []
    for name, value in flags:
        out.append(name)
        if value is not None:
            out.append(value)
    return tuple(out)


def canonical_flag(flag: str) -> str:
    """``--max_model_len`` → ``--max-model-len``: the one spelling merges compare. A short
    option (``-tp``) stays as written: ``--tp`` would be another option, or none."""
    if not flag.startswith("--"):
        return flag
    return "--" + flag[2:].replace("_", "-")
