"""The SDK's dynamic-provider host driven over gRPC, call by call, as the engine drives it.

This is the fast, unit-level check of how a provider behaves behind the real host
(pickling, secrets, unknowns, failures); whole programs run under the real Pulumi CLI
(tests/program).

The provider under test (tests/support/sample_provider.py) writes real files on a real
SSH host (hostlab) or locally; nothing is mocked except the engine's resource monitor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from amdfleet.remote.transport.ssh import SshConnection
from tests.support.hostlab import HostLab, LabFactory
from tests.support.pulumi_host import (
    UNKNOWN,
    ProviderCallError,
    ProviderHost,
    is_secret,
    reveal,
    secret,
    with_provider,
)
from tests.support.sample_provider import (
    FailingProvider,
    RendezvousProvider,
    SampleFileProvider,
)

TOKEN = "tok-0123456789"


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    return hostlab(1)


@pytest.fixture
def conn(lab: HostLab) -> Iterator[SshConnection]:
    with lab.connect(0) as c:
        yield c


def _props(host: dict[str, Any], path: str, content: str = "hello\n") -> dict[str, Any]:
    return with_provider(
        SampleFileProvider(),
        {
            "host": host,
            "path": path,
            "content": content,
            "token": secret(TOKEN),
            "mode": 0o600,
            "sha256": None,
        },
    )


# -- the provider host, call by call ---------------------------------------------------


@pytest.mark.netns
def test_full_cycle_through_the_real_host(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    host = lab.host_props(0)
    path = "/opt/sample/cycle.txt"
    urn = provider_host.urn("cycle")

    checked = provider_host.check(_props(host, path), urn=urn)
    assert checked.failures == [] and is_secret(checked.inputs["token"])

    created = provider_host.create(checked.inputs, urn=urn)
    assert created.id == f"host0:{path}"
    assert conn.get(path) == b"hello\n"
    assert conn.get(path + ".token") == TOKEN.encode()
    assert conn.run(f"stat -c %a {path} {path}.token", timeout=10).stdout.split() == ["600", "600"]
    outs = created.outputs
    assert is_secret(outs["token"]) and reveal(outs["token"]) == TOKEN  # re-marked secret
    assert outs["mode"] == 384.0  # numbers come back as floats, as with the engine
    assert outs["sha256"] == hashlib.sha256(b"hello\n").hexdigest() and "__provider" in outs

    read = provider_host.read(created.id, outs, inputs=checked.inputs, urn=urn)
    assert (read.id, read.outputs["content"]) == (created.id, "hello\n")

    same = provider_host.diff(created.id, outs, checked.inputs, old_inputs=checked.inputs, urn=urn)
    assert (same.changes, same.replaces) == (False, [])

    news = provider_host.check(_props(host, path, "bye\n"), checked.inputs, urn=urn).inputs
    change = provider_host.diff(created.id, outs, news, old_inputs=checked.inputs, urn=urn)
    assert (change.changes, change.replaces) == (True, [])
    updated = provider_host.update(created.id, outs, news, old_inputs=checked.inputs, urn=urn)
    assert conn.get(path) == b"bye\n" and updated["sha256"] == hashlib.sha256(b"bye\n").hexdigest()

    moved = provider_host.check(_props(host, path + ".2"), checked.inputs, urn=urn).inputs
    replace = provider_host.diff(created.id, updated, moved, old_inputs=news, urn=urn)
    assert (replace.replaces, replace.delete_before_replace) == (["path"], True)

    provider_host.delete(created.id, updated, old_inputs=news, urn=urn)
    assert conn.get(path) is None and conn.get(path + ".token") is None
    provider_host.delete(created.id, updated, old_inputs=news, urn=urn)  # idempotent
    assert provider_host.read(created.id, updated, urn=urn).id == ""  # gone on refresh


@pytest.mark.netns
def test_create_failure_surfaces_the_provider_message(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    props = _props(lab.host_props(0), "/proc/amdfleet/cannot.txt")
    checked = provider_host.check(props)
    with pytest.raises(ProviderCallError) as info:
        provider_host.create(checked.inputs)
    message = info.value.message
    assert message.startswith("amdfleet.errors.RemoteError: [host0] cannot write /proc/amdfleet/")
    assert "Traceback" not in info.value.details and TOKEN not in info.value.details


def test_check_failures_and_unknowns(provider_host: ProviderHost, tmp_path: Path) -> None:
    local = {"connection": "local"}
    bad = provider_host.check(_props(local, "relative/path.txt"))
    assert bad.failures == [("path", "must be absolute, got 'relative/path.txt'")]

    # Preview: inputs not known yet travel as unknowns through Check and Diff.
    preview = provider_host.check({**_props(local, str(tmp_path / "f")), "path": UNKNOWN})
    assert preview.inputs["path"] == UNKNOWN and preview.failures == []
    olds = provider_host.check(_props(local, str(tmp_path / "f"))).inputs
    diff = provider_host.diff("id", olds, preview.inputs, old_inputs=olds)
    assert (diff.changes, diff.replaces) == (True, ["path"])


def test_local_create_and_delete(provider_host: ProviderHost, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "local.txt"
    checked = provider_host.check(_props({"connection": "local"}, str(path)))
    created = provider_host.create(checked.inputs)
    assert path.read_text() == "hello\n" and (path.stat().st_mode & 0o777) == 0o600
    provider_host.delete(created.id, created.outputs)
    assert not path.exists()


# -- amdfleet's provider host: wider than the SDK's, plain amdfleet errors ----------------


def test_the_host_runs_sixteen_provider_calls_at_once(provider_host: ProviderHost) -> None:
    """The SDK's host serves 4 calls at a time; amdfleet's lets a fleet's hosts all work
    at once (16 creates meet at a barrier: with 4 threads they could never all arrive)."""
    parties = 16

    def create(index: int) -> str:
        props = {"group": "wide", "parties": parties, "index": index, "timeout_s": 30}
        return provider_host.create(with_provider(RendezvousProvider(), props)).id

    with ThreadPoolExecutor(max_workers=parties) as pool:
        ids = sorted(pool.map(create, range(parties)))
    assert ids == sorted(f"wide-{i}" for i in range(parties))


def test_an_amdfleet_error_reaches_the_user_without_a_python_stack(
    provider_host: ProviderHost,
) -> None:
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(with_provider(FailingProvider(), {"error": "amdfleet"}))
    expected = "amdfleet.errors.RemoteError: [host7] mkdir /opt/x failed\n  hint: check the disk\n"
    assert caught.value.details == expected
    with pytest.raises(ProviderCallError) as bug:
        provider_host.create(with_provider(FailingProvider(), {"error": "bug"}))
    assert "Traceback (most recent call last)" in bug.value.details  # a bug keeps its stack
    assert "RuntimeError: an unexpected bug" in bug.value.details
