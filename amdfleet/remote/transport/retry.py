"""How :func:`~amdfleet.remote.transport.ssh.connect` retries a host that does not answer
yet: the policy record and the one tenacity loop that applies it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import tenacity

from amdfleet.errors import HostUnreachableError


@dataclass(frozen=True)
class ConnectRetry:
    """How :func:`~amdfleet.remote.transport.ssh.connect` retries a host not answering yet.

    Retried: a refused or timed-out TCP connect, "no route to host" (no ARP answer: a
    host down or rebooting), and a connection reset or closed before the SSH banner (an
    sshd still starting, or over its ``MaxStartups``). Never retried:
    a host-key mismatch, a missing or malformed pin, an unreadable client key, a rejected
    login, or any other handshake failure -- those do not pass by waiting.

    The wait before attempt ``n + 1`` is ``first_wait * 2 ** (n - 1)`` seconds, at most
    ``max_wait``. No attempt starts later than ``within`` seconds after the first one,
    and each attempt's TCP connect waits at most ``timeout``, cut to the time left: a
    host that does not answer fails within ``within`` seconds plus, at worst, one SSH
    handshake (a host that accepts but stalls the banner is bounded by ``timeout``).
    """

    attempts: int = 5
    within: float = 30.0
    first_wait: float = 0.5
    max_wait: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.within <= 0 or self.first_wait < 0 or self.max_wait < 0:
            raise ValueError(f"invalid connect retry policy: {self}")


DEFAULT_RETRY = ConnectRetry()


NO_RETRY = ConnectRetry(attempts=1, within=math.inf)
"""One attempt, with the full ``timeout``."""


RetryListener = Callable[[int, HostUnreachableError], None]
"""Called as ``on_retry(attempt, error)`` when attempt number ``attempt`` failed with the
transient ``error`` and another attempt follows (after the backoff wait)."""


def retrying(retry: ConnectRetry, on_retry: RetryListener | None) -> tenacity.Retrying:
    """The one retry policy of ``ssh.connect``: HostUnreachableError is retried with
    exponential backoff until ``retry.attempts`` are made or the next attempt would start
    after ``retry.within`` seconds; then the last error is raised again, naming the
    attempts made and the time they took. Any other error ends the retries at once."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, _failure(state))

    def give_up(state: tenacity.RetryCallState) -> NoReturn:
        last = _failure(state)
        raise HostUnreachableError(
            last.host,
            last.reason,
            last.hint,
            attempts=state.attempt_number,
            elapsed=state.seconds_since_start,
        ) from last

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(HostUnreachableError),
        wait=tenacity.wait_exponential(multiplier=retry.first_wait, max=retry.max_wait),
        stop=tenacity.stop_after_attempt(retry.attempts) | tenacity.stop_before_delay(retry.within),
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )


def _failure(state: tenacity.RetryCallState) -> HostUnreachableError:
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, HostUnreachableError)  # the only error that is retried
    return error
