"""Connecting retries a host that does not answer yet, within a bound, and nothing else.

Real sshd hosts from the lab, reached directly or through a real TCP relay on loopback
(tests/support/tcprelay.py) that refuses, hangs up on or forwards each connection as the
test says. What changes between attempts is done from ``connect``'s ``on_retry`` hook,
so no test waits on the clock; the backoff waits are set to a few milliseconds.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amdfleet.errors import HostKeyMismatchError, HostUnreachableError, RemoteError
from amdfleet.remote.transport.retry import ConnectRetry
from amdfleet.remote.transport.ssh import connect
from amdfleet.remote.transport.target import HostTarget
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.tcprelay import TcpRelay

FAST = ConnectRetry(attempts=4, within=10.0, first_wait=0.01, max_wait=0.02)


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    """Two hosts shared by the tests that leave them as they found them."""
    return hostlab(2)


class Attempts:
    """An ``on_retry`` hook that records each failed attempt followed by another."""

    def __init__(self, action: dict[int, object] | None = None) -> None:
        self.failed: list[tuple[int, str]] = []
        self._action = action or {}

    def __call__(self, attempt: int, error: HostUnreachableError) -> None:
        assert error.attempts is None  # one attempt's error, not the final one
        self.failed.append((attempt, error.reason))
        action = self._action.get(attempt)
        if callable(action):
            action()


@pytest.fixture
def relay(lab: HostLab) -> Iterator[TcpRelay]:
    """A relay to host0's sshd whose port refuses connections until ``listen()``."""
    with TcpRelay((lab[0].address, lab[0].port), listening=False) as r:
        yield r


def _via(lab: HostLab, relay: TcpRelay, **overrides: object) -> HostTarget:
    return lab.target(0, address=relay.address, port=relay.port, **overrides)


# -- transient failures are retried, then reported with the attempts made --------------


@pytest.mark.netns
def test_refused_port_gives_up_after_the_configured_attempts(lab: HostLab) -> None:
    attempts = Attempts()
    t0 = time.monotonic()
    with pytest.raises(HostUnreachableError) as info:
        connect(lab.target(0, port=2222), timeout=5, retry=FAST, on_retry=attempts)
    took = time.monotonic() - t0
    err = info.value
    where = f"{lab[0].address}:2222"
    assert str(err).startswith(
        f"[host0] connection to {where} refused; gave up after 4 attempts over "
    )
    assert (err.attempts, err.reason) == (4, f"connection to {where} refused")
    assert attempts.failed == [(n, err.reason) for n in (1, 2, 3)]
    assert err.elapsed is not None and err.elapsed <= took < 2.0  # backoff 10+20+20 ms
    assert f"ssh-keyscan -p 2222 {lab[0].address}" in err.hint
    assert isinstance(err.__cause__, HostUnreachableError)  # the last attempt's error


@pytest.mark.netns
def test_time_bound_ends_the_retries_before_the_attempts_do(lab: HostLab) -> None:
    bounded = ConnectRetry(attempts=1000, within=0.3, first_wait=0.05, max_wait=0.05)
    attempts = Attempts()
    t0 = time.monotonic()
    with pytest.raises(HostUnreachableError) as info:
        connect(lab.target(0, port=2222), timeout=5, retry=bounded, on_retry=attempts)
    took = time.monotonic() - t0
    err = info.value
    assert err.attempts is not None and 2 <= err.attempts <= 7  # 50 ms apart in 300 ms
    assert len(attempts.failed) == err.attempts - 1
    assert err.elapsed is not None and err.elapsed < 0.3 and took < 1.0
    assert f"gave up after {err.attempts} attempts over {err.elapsed:.1f}s" in str(err)


@pytest.mark.netns
def test_sshd_that_starts_listening_late_is_connected(lab: HostLab, relay: TcpRelay) -> None:
    attempts = Attempts({2: relay.listen})  # the port opens after the 2nd refusal
    with connect(_via(lab, relay), timeout=5, retry=FAST, on_retry=attempts) as conn:
        assert conn.run("echo up", timeout=10).stdout == "up\n"
    where = f"{relay.address}:{relay.port}"
    assert attempts.failed == [(n, f"connection to {where} refused") for n in (1, 2)]
    assert relay.accepted == 1  # the refused attempts never reached a listener


@pytest.mark.netns
@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
def test_connection_closed_before_the_banner_is_retried(lab: HostLab, reset: bool) -> None:
    with TcpRelay((lab[0].address, lab[0].port), drop=2, reset=reset) as relay:
        attempts = Attempts()
        with connect(_via(lab, relay), timeout=5, retry=FAST, on_retry=attempts) as conn:
            assert conn.run("echo up", timeout=10).stdout == "up\n"
        assert relay.accepted == 3
    # Which of FIN or RST the client notices first is a race; both are the same case.
    banner = re.compile(
        rf"{relay.address}:{relay.port} (closed|reset) the connection before sending the SSH banner"
    )
    assert [n for n, _ in attempts.failed] == [1, 2]
    assert all(banner.fullmatch(reason) for _, reason in attempts.failed), attempts.failed


@pytest.mark.netns
def test_banner_never_sent_gives_up_with_a_true_hint(lab: HostLab) -> None:
    with TcpRelay((lab[0].address, lab[0].port), drop=100) as relay:
        with pytest.raises(HostUnreachableError) as info:
            connect(_via(lab, relay), timeout=5, retry=FAST)
        assert relay.accepted == 4
    err = info.value
    assert " the connection before sending the SSH banner; gave up after 4 attempts" in str(err)
    assert "still starting" in err.hint and "run the Pulumi command again" in err.hint


@pytest.mark.netns
def test_crashed_host_is_connected_once_it_is_back(hostlab: LabFactory) -> None:
    with hostlab(1) as lab:
        lab.crash(0)
        attempts = Attempts({1: lambda: lab.reboot(0)})  # reboot waits for sshd
        with connect(lab.target(0), timeout=5, retry=FAST, on_retry=attempts) as conn:
            assert conn.run("echo back", timeout=10).stdout == "back\n"
        where = f"{lab[0].address}:{lab[0].port}"
        assert attempts.failed == [(1, f"connection to {where} refused")]


@pytest.mark.netns
def test_timed_out_connects_are_retried_until_the_partition_heals(
    hostlab: LabFactory,
) -> None:
    with hostlab(1) as lab:
        require_netns(lab)
        where = f"{lab[0].address}:22"
        lab.partition(0)
        # A connect is cut to the time left: `within` bounds even a long `timeout`.
        # (Both cases run before ARP gives up on the host, ~3 s: until then connects
        # time out rather than fail with "No route to host".)
        short = ConnectRetry(attempts=10, within=0.5, first_wait=0.01, max_wait=0.01)
        t0 = time.monotonic()
        with pytest.raises(HostUnreachableError) as info:
            connect(lab.target(0), timeout=30, retry=short)
        assert time.monotonic() - t0 < 1.0
        assert str(info.value).startswith(
            f"[host0] connecting to {where} timed out after 0.5s; gave up after 1 attempt over"
        )

        two = ConnectRetry(attempts=2, within=10.0, first_wait=0.01)
        t0 = time.monotonic()
        with pytest.raises(HostUnreachableError) as info:
            connect(lab.target(0), timeout=0.3, retry=two)
        assert time.monotonic() - t0 < 1.5
        assert str(info.value).startswith(
            f"[host0] connecting to {where} timed out after 0.3s; gave up after 2 attempts"
        )
        assert "partition" in info.value.hint

        attempts = Attempts({1: lambda: lab.heal(0)})
        with connect(lab.target(0), timeout=2, retry=FAST, on_retry=attempts) as conn:
            assert conn.run("hostname", timeout=10).stdout == "host0\n"
        # By now ARP may have given up: the kernel then says so instead of timing out.
        transient = (
            f"connecting to {where} timed out after 2s",
            f"cannot connect to {where}: No route to host",
        )
        assert [n for n, _ in attempts.failed] == [1] and attempts.failed[0][1] in transient


# -- permanent failures fail at once ---------------------------------------------------


@pytest.mark.netns
def test_rejected_login_is_not_retried(lab: HostLab, relay: TcpRelay, tmp_path: Path) -> None:
    relay.listen()
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    attempts = Attempts()
    with pytest.raises(RemoteError) as info:
        connect(_via(lab, relay, key_path=str(key)), timeout=5, retry=FAST, on_retry=attempts)
    assert type(info.value) is RemoteError
    assert "public-key authentication as" in str(info.value)
    assert (relay.accepted, attempts.failed) == (1, [])


@pytest.mark.netns
def test_host_key_mismatch_is_not_retried(lab: HostLab, relay: TcpRelay) -> None:
    relay.listen()
    attempts = Attempts()
    wrong = _via(lab, relay, host_key=lab[1].host_key)
    with pytest.raises(HostKeyMismatchError):
        connect(wrong, timeout=5, retry=FAST, on_retry=attempts)
    assert (relay.accepted, attempts.failed) == (1, [])


@pytest.mark.netns
def test_bad_key_file_fails_before_any_connect(
    lab: HostLab, relay: TcpRelay, tmp_path: Path
) -> None:
    relay.listen()
    attempts = Attempts()
    with pytest.raises(RemoteError, match="cannot load private key"):
        connect(
            _via(lab, relay, key_path=str(tmp_path / "absent")),
            timeout=5,
            retry=FAST,
            on_retry=attempts,
        )
    assert (relay.accepted, attempts.failed) == (0, [])


def test_retry_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="invalid connect retry policy"):
        ConnectRetry(attempts=0)
