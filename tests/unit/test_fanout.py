"""The one fan-out (amdfleet.remote.transport.fanout): every call runs to its end, each
result and failure is kept by key, and the caller raises or reports failures."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from amdfleet.errors import AmdFleetError, RemoteError
from amdfleet.remote.transport.fanout import fan_out


def test_results_are_kept_by_key_and_listed_in_the_callers_order() -> None:
    outcome = fan_out({key: (lambda key=key: key * 2) for key in (3, 1, 2)})
    assert outcome.failures == {}
    assert outcome.results == {1: 2, 2: 4, 3: 6}
    assert outcome.in_order([3, 1, 2]) == [6, 2, 4]
    outcome.raise_first()  # nothing failed: nothing raised


def test_no_call_is_no_thread_and_no_result() -> None:
    outcome = fan_out({})
    assert (outcome.results, outcome.failures) == ({}, {})


def test_a_failure_stops_no_other_call_and_the_first_is_raised_as_it_was() -> None:
    first = RemoteError("node-1", "connection refused", hint="start sshd")
    failed_first = threading.Event()

    def fail_first() -> str:
        failed_first.set()
        raise first

    def fail_later() -> str:
        assert failed_first.wait(10)
        raise ValueError("later")

    calls = {"node-0": lambda: "ok", "node-1": fail_first, "node-2": fail_later}
    outcome = fan_out(calls)
    assert outcome.results == {"node-0": "ok"}
    assert list(outcome.failures) == ["node-1", "node-2"]  # in the order they happened
    assert outcome.outcome("node-0") == "ok"
    assert outcome.outcome("node-1") is first
    with pytest.raises(RemoteError) as raised:
        outcome.raise_first()
    assert raised.value is first and raised.value.hint == "start sshd"


def test_expected_failures_are_left_for_the_caller_to_report() -> None:
    unreachable = AmdFleetError("node-1 is unreachable")
    outcome = fan_out({"node-0": lambda: 1, "node-1": _raiser(unreachable)})
    outcome.raise_first(expected=AmdFleetError)  # nothing else failed: nothing raised
    assert outcome.outcome("node-1") is unreachable
    bug = fan_out({"node-0": _raiser(KeyError("bug")), "node-1": _raiser(unreachable)})
    with pytest.raises(KeyError):
        bug.raise_first(expected=AmdFleetError)


def test_on_failure_hears_the_calls_still_running_until_they_end() -> None:
    """A failure makes the fan-out stop the others: ``on_failure`` is called with the
    keys still running, again and again while they run, and the stop ends them."""
    stopped = threading.Event()
    heard: list[list[str]] = []

    def wait_for_stop() -> str:
        assert stopped.wait(10)
        raise RemoteError("node-1", "stopped")

    def stop(pending: list[str]) -> None:
        heard.append(pending)
        if len(heard) == 2:
            stopped.set()

    calls = {"node-0": _raiser(RemoteError("node-0", "boom")), "node-1": wait_for_stop}
    outcome = fan_out(calls, on_failure=stop, every_s=0.01)
    assert len(heard) >= 2 and all(pending == ["node-1"] for pending in heard)
    assert list(outcome.failures) == ["node-0", "node-1"]
    with pytest.raises(RemoteError, match="boom"):
        outcome.raise_first()


def test_an_interrupt_is_raised_once_every_call_has_ended() -> None:
    ended = threading.Event()

    def interrupted() -> None:
        raise KeyboardInterrupt

    def slow() -> None:
        ended.set()

    with pytest.raises(KeyboardInterrupt):
        fan_out({"a": interrupted, "b": slow})
    assert ended.is_set()


def _raiser(error: Exception) -> Callable[[], object]:
    def call() -> object:
        raise error

    return call
