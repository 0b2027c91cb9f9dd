"""The progress reporter: what it sends to the engine's ``Log`` service, how often, and
that it does nothing (and never fails) without an engine.

The engine is a real gRPC ``pulumirpc.Engine`` server on 127.0.0.1
(tests/support/engine_log.py); the real CLI drawing these messages is tested in
tests/providers/test_progress_cli.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from pulumi.runtime.proto import engine_pb2

from amdfleet.providers.progress import (
    MAX_CHARS,
    SEND_TIMEOUT_S,
    URN_KEY,
    ResourceProgress,
    engine_address,
    format_bytes,
    format_duration,
    secret_values,
    set_engine_address,
)
from amdfleet.remote.transport.connection import REDACTED
from tests.support.engine_log import EngineLog
from tests.support.pulumi_host import secret

URN = "urn:pulumi:dev::amdfleet::amdfleet:index:Deployment$amdfleet:index:EngineService::e"
TOKEN = "hf_SecretToken0123456789"
API_KEY = "sk-live-4c1d9e0b"


@pytest.fixture
def engine() -> Iterator[EngineLog]:
    with EngineLog() as log:
        yield log


def test_steps_statuses_and_notes_reach_the_engine_for_the_resource(engine: EngineLog) -> None:
    with ResourceProgress(URN, engine.address) as progress:
        assert progress.enabled
        progress.step("uploading 3 files")
        progress.note("engine ready after 52 s")

    first, second = engine.entries()
    assert (first.urn, first.severity, first.ephemeral) == (URN, engine_pb2.INFO, True)
    assert first.message == "uploading 3 files"
    assert (second.message, second.ephemeral) == ("engine ready after 52 s", False)


def test_a_message_is_one_clean_line_of_bounded_length(engine: EngineLog) -> None:
    with ResourceProgress(URN, engine.address) as progress:
        progress.step("\x1b[1m#8 [3/7] RUN pip install\x1b[0m\r\n   vllm\t  ")
        progress.step("x" * 1000)
        progress.step(" \n ")  # nothing left to show: not sent

    clean, long = engine.messages()
    assert clean == "#8 [3/7] RUN pip install vllm"
    assert len(long) == MAX_CHARS and long.endswith("…")
    assert len(engine.entries()) == 2


def test_secret_inputs_are_masked_in_every_message(engine: EngineLog) -> None:
    props = {
        URN_KEY: URN,
        "hf_token": TOKEN,
        "secret_env": secret({"AMDFLEET_API_KEY": API_KEY}),
        "model": "tiny",
    }
    assert sorted(secret_values(props)) == sorted([TOKEN, API_KEY])
    with ResourceProgress(URN, engine.address, secrets=secret_values(props)) as progress:
        progress.step(f"log: api_key={API_KEY} token {TOKEN}")
        progress.status(f"serving tiny with {API_KEY}")
        progress.note(f"{TOKEN[:-1]}{TOKEN}")

    text = "\n".join(engine.messages())
    assert API_KEY not in text and TOKEN not in text
    assert engine.messages()[0] == f"log: api_key={REDACTED} token {REDACTED}"


def test_statuses_are_rate_limited_and_the_latest_wins(engine: EngineLog) -> None:
    interval = 0.3
    with ResourceProgress(URN, engine.address, interval=interval) as progress:
        progress.step("downloading")
        progress.status("downloading: 1 of 4 files")  # a phase's first status: at once
        progress.status("downloading: 2 of 4 files")  # deferred, then replaced
        progress.status("downloading: 3 of 4 files")  # sent when the interval ends
        last = engine.wait_for(lambda e: e.message.endswith("3 of 4 files"))
        progress.status("downloading: 3 of 4 files")  # the same text: not sent again
        progress.step("writing the marker")  # a new phase: at once
        progress.status("writing the marker: 1 of 2")  # its first status: at once

    sent = engine.entries()[1:]
    assert [e.message for e in sent] == [
        "downloading: 1 of 4 files",
        "downloading: 3 of 4 files",
        "writing the marker",
        "writing the marker: 1 of 2",
    ]
    assert last.at - sent[0].at >= interval * 0.9  # the clocks are the same monotonic one


def test_a_deferred_status_is_dropped_when_the_operation_ends(engine: EngineLog) -> None:
    with ResourceProgress(URN, engine.address, interval=60) as progress:
        progress.status("loading 1")
        progress.status("loading 2")
    assert engine.messages() == ["loading 1"]


def test_the_engine_address_the_plugin_sets_is_where_resources_report(
    engine: EngineLog,
) -> None:
    """The plugin sets the address it was started with; a resource's reporter sends
    there. Anything but ``host:port`` (a flag, an empty argument) counts as no engine."""
    try:
        set_engine_address(engine.address)
        assert engine_address() == engine.address
        with ResourceProgress.for_resource({URN_KEY: URN, "hf_token": TOKEN}) as progress:
            progress.step(f"connecting with {TOKEN}")
        assert engine.messages(URN) == [f"connecting with {REDACTED}"]
        for bad in ("--logtostderr", "", "no port here"):
            set_engine_address(bad)
            assert engine_address() is None
    finally:
        set_engine_address(None)


def test_without_engine_or_urn_nothing_is_sent_and_nothing_fails(engine: EngineLog) -> None:
    # In-process (pytest is not the provider plugin) there is no engine address.
    assert engine_address() is None
    for progress in (
        ResourceProgress.for_resource({URN_KEY: URN, "hf_token": TOKEN}),
        ResourceProgress(None, engine.address),
        ResourceProgress("not-a-urn", engine.address),
        ResourceProgress.for_resource({"host": {}}),
    ):
        with progress:
            assert not progress.enabled
            progress.step("connecting")
            progress.status("1 of 2")
            progress.note("done")
    assert engine.entries() == []


def test_an_engine_that_is_gone_disables_progress_without_failing() -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    t0 = time.monotonic()
    with ResourceProgress(URN, address) as progress:
        progress.step("connecting")
        assert not progress.enabled
        progress.note("done")  # not even tried again
    assert time.monotonic() - t0 < SEND_TIMEOUT_S + 1


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (3 * 2**20, "3.0 MiB"),
        (140.2 * 2**30, "140.2 GiB"),
        (2**41, "2.0 TiB"),
    ],
)
def test_format_bytes(count: float, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (52.9, "52 s"), (723, "12 min 03 s"), (7500, "2 h 05 min"), (-3, "0 s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
