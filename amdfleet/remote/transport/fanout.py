"""The one fan-out: a call per host (or per node, run, group) at once, with one error policy.

:func:`fan_out` runs every call on its own thread and returns when all of them have
ended. A call that raises does not stop the others and loses nothing: each result and
each failure is kept under its call's key, failures in the order they happened. The
caller then decides what a failure means with the same record: :meth:`FanOut.raise_first`
raises the first failure as it was raised (its type, message and hint intact), or only
the first one that is not an expected kind, leaving the expected ones (say, a host that
cannot be reached) to be reported per key.

A caller that must not let the other calls run on after a failure (they would wait for
a peer that is gone) passes ``on_failure``: it is called with the keys of the calls still
running as soon as the first failure arrives, and again every ``every_s`` seconds while
some still run (a stop can reach a host before its call has started).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

DEFAULT_EVERY_S = 2.0


@dataclass
class FanOut(Generic[K, T]):
    """What every call of a :func:`fan_out` ended with: its result or its failure."""

    results: dict[K, T] = field(default_factory=dict)
    failures: dict[K, Exception] = field(default_factory=dict)
    """In the order the failures happened."""

    def raise_first(self, *, expected: type[Exception] | tuple[type[Exception], ...] = ()) -> None:
        """Raise the first failure that is not of an ``expected`` kind, if any."""
        for error in self.failures.values():
            if not isinstance(error, expected):
                raise error

    def outcome(self, key: K) -> T | Exception:
        """The result of the call under ``key``, or its failure."""
        return self.failures[key] if key in self.failures else self.results[key]

    def in_order(self, keys: Sequence[K]) -> list[T]:
        """The results for ``keys``, in that order (after :meth:`raise_first`)."""
        return [self.results[key] for key in keys]


def fan_out(
    calls: Mapping[K, Callable[[], T]],
    *,
    on_failure: Callable[[list[K]], None] | None = None,
    every_s: float = DEFAULT_EVERY_S,
) -> FanOut[K, T]:
    """Run every call at once (one thread each) and return when all have ended.

    An ``Exception`` a call raises is kept in :attr:`FanOut.failures`, never raised here;
    anything else (``KeyboardInterrupt``, ``SystemExit``) is raised once every call has
    ended. ``on_failure`` (see the module docstring) hears the keys of the calls still
    running after a failure.
    """
    outcome: FanOut[K, T] = FanOut()
    if not calls:
        return outcome
    lock = threading.Lock()

    def run(key: K, call: Callable[[], T]) -> None:
        """Keep the call's result or failure, in the order they happen."""
        try:
            result = call()
        except Exception as error:
            with lock:
                outcome.failures[key] = error
        else:
            with lock:
                outcome.results[key] = result

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {pool.submit(run, key, call): key for key, call in calls.items()}
        pending = set(futures)
        while pending:
            stopping = on_failure is not None and _failed(outcome, lock)
            done, pending = wait(
                pending, timeout=every_s if stopping else None, return_when=FIRST_COMPLETED
            )
            for future in done:
                future.result()  # raises only what ``run`` lets through: not an Exception
            if on_failure is not None and pending and _failed(outcome, lock):
                on_failure([key for future, key in futures.items() if future in pending])
    return outcome


def _failed(outcome: FanOut[K, T], lock: threading.Lock) -> bool:
    with lock:
        return bool(outcome.failures)
