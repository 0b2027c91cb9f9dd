"""Helpers for the plain values that cross the provider boundary.

Through the engine, numbers arrive as floats, secrets may arrive wrapped in the SDK's
secret signature (depending on how the host negotiated), and unknowns appear during
preview. These helpers normalise those forms; they hold no state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pulumi.runtime import rpc


def plain(value: Any) -> Any:
    """``value`` with any secret wrappers removed, recursively."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def as_int(value: Any) -> int:
    """An integer prop (the engine delivers numbers as floats)."""
    return int(plain(value))


def fingerprint(value: Any) -> str:
    """A stable SHA-256 of a JSON-able value (used to detect changed inputs, including
    secrets, without storing the secret in outputs)."""
    text = json.dumps(plain(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def changed_keys(
    olds: Mapping[str, Any], news: Mapping[str, Any], keys: tuple[str, ...]
) -> list[str]:
    """The ``keys`` whose (unwrapped) values differ between ``olds`` and ``news``."""
    return [k for k in keys if plain(olds.get(k)) != plain(news.get(k))]
