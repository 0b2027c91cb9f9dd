"""Waiting for a condition in tests: polled, bounded by a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.2
) -> None:
    """Return as soon as ``predicate()`` is true; fail naming ``what`` after ``timeout``
    seconds. ``interval`` is the poll period, not a wait for anything."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
