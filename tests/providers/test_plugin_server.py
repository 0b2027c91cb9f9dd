"""amdfleet's provider plugin driven over gRPC, call by call, as the engine drives it.

What the plugin must give (issue 23, item 1) beyond serving each resource: many calls at
once, amdfleet errors without a Python stack (any other exception keeps its traceback),
``read`` and ``delete`` seeing the inputs, a clear error for a type it does not serve, and
the move of a stack created by the dynamic providers (their pickled ``__provider`` in its
state) without touching a host. Whole programs run under the real Pulumi CLI
(tests/program).

The real plugin (``python -m amdfleet.plugin``) serves amdfleet's resources; the same
server serves the sample providers (tests/support/sample_provider.py) through a test-only
entry (tests/support/sample_plugin.py) for what no real provider shows on demand. They
write real files on a real SSH host (hostlab) or locally; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from amdfleet.providers.props import PROVIDER_KEY
from amdfleet.providers.ssh_host import SshHost, SshHostProps, SshHostProvider
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.ssh import SshConnection
from amdfleet.remote.transport.target import HostTarget
from tests.support.engine_log import EngineLog
from tests.support.hostlab import HostLab, LabFactory
from tests.support.pulumi_host import (
    UNKNOWN,
    ProviderCallError,
    ProviderHost,
    is_secret,
    reveal,
    secret,
)
from tests.support.sample_provider import FAILING, RENDEZVOUS, SAMPLE_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-0123456789"
CPU = HostRequirement(accelerator="cpu", gpu_count=0, runtime="process", weights_dir="/opt")


@pytest.fixture(scope="module")
def sample_host(engine_log: EngineLog) -> Iterator[ProviderHost]:
    """The plugin server with the sample providers (tests/support/sample_plugin.py)."""
    with ProviderHost.start(
        REPO_ROOT, engine=engine_log.address, module="tests.support.sample_plugin"
    ) as host:
        host.configure({})
        yield host


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    return hostlab(1)


@pytest.fixture
def conn(lab: HostLab) -> Iterator[SshConnection]:
    with lab.connect(0) as c:
        yield c


def _props(host: dict[str, Any], path: str, content: str = "hello\n") -> dict[str, Any]:
    return {
        "host": host,
        "path": path,
        "content": content,
        "token": secret(TOKEN),
        "mode": 0o600,
        "sha256": None,
    }


# -- a resource's life, call by call -------------------------------------------------------


@pytest.mark.netns
def test_full_cycle_through_the_plugin(
    sample_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    host = lab.host_props(0)
    path = "/opt/sample/cycle.txt"
    urn = sample_host.urn("cycle", SAMPLE_FILE)

    checked = sample_host.check(_props(host, path), urn=urn)
    assert checked.failures == [] and is_secret(checked.inputs["token"])

    created = sample_host.create(checked.inputs, urn=urn)
    assert created.id == f"host0:{path}"
    assert conn.get(path) == b"hello\n"
    assert conn.get(path + ".token") == TOKEN.encode()
    assert conn.run(f"stat -c %a {path} {path}.token", timeout=10).stdout.split() == ["600", "600"]
    outs = created.outputs
    assert "token" not in outs and TOKEN not in str(reveal(outs))
    assert outs["mode"] == 384.0  # numbers come back as floats, as with the engine
    assert outs["sha256"] == hashlib.sha256(b"hello\n").hexdigest()

    read = sample_host.read(created.id, outs, inputs=checked.inputs, urn=urn)
    assert (read.id, read.outputs["content"], read.outputs["token_ok"]) == (
        created.id,
        "hello\n",
        True,
    )

    same = sample_host.diff(created.id, outs, checked.inputs, old_inputs=checked.inputs, urn=urn)
    assert (same.changes, same.replaces) == (False, [])

    news = sample_host.check(_props(host, path, "bye\n"), checked.inputs, urn=urn).inputs
    change = sample_host.diff(created.id, outs, news, old_inputs=checked.inputs, urn=urn)
    assert (change.changes, change.replaces, change.detailed["content"]) == (True, [], "UPDATE")
    updated = sample_host.update(created.id, outs, news, old_inputs=checked.inputs, urn=urn)
    assert conn.get(path) == b"bye\n" and updated["sha256"] == hashlib.sha256(b"bye\n").hexdigest()

    moved = sample_host.check(_props(host, path + ".2"), checked.inputs, urn=urn).inputs
    replace = sample_host.diff(created.id, updated, moved, old_inputs=news, urn=urn)
    assert (replace.replaces, replace.delete_before_replace) == (["path"], True)
    assert replace.detailed["path"] == "UPDATE_REPLACE"

    sample_host.delete(created.id, updated, old_inputs=news, urn=urn)
    assert conn.get(path) is None and conn.get(path + ".token") is None
    sample_host.delete(created.id, updated, old_inputs=news, urn=urn)  # idempotent
    assert sample_host.read(created.id, updated, inputs=news, urn=urn).id == ""  # gone


@pytest.mark.netns
def test_create_failure_surfaces_the_provider_message(
    sample_host: ProviderHost, lab: HostLab
) -> None:
    urn = sample_host.urn("cannot", SAMPLE_FILE)
    checked = sample_host.check(_props(lab.host_props(0), "/proc/amdfleet/cannot.txt"), urn=urn)
    with pytest.raises(ProviderCallError) as info:
        sample_host.create(checked.inputs, urn=urn)
    message = info.value.message
    assert message.startswith("amdfleet.errors.RemoteError: [host0] cannot write /proc/amdfleet/")
    assert "Traceback" not in info.value.details and TOKEN not in info.value.details


def test_check_failures_and_unknowns(sample_host: ProviderHost, tmp_path: Path) -> None:
    local = {"connection": "local"}
    urn = sample_host.urn("checked", SAMPLE_FILE)
    bad = sample_host.check(_props(local, "relative/path.txt"), urn=urn)
    assert bad.failures == [("path", "must be absolute, got 'relative/path.txt'")]

    # Preview: inputs not known yet travel as unknowns through Check and Diff.
    preview = sample_host.check({**_props(local, str(tmp_path / "f")), "path": UNKNOWN}, urn=urn)
    assert preview.inputs["path"] == UNKNOWN and preview.failures == []
    olds = sample_host.check(_props(local, str(tmp_path / "f")), urn=urn).inputs
    diff = sample_host.diff("id", olds, preview.inputs, old_inputs=olds, urn=urn)
    assert (diff.changes, diff.replaces) == (True, ["path"])


def test_read_diff_and_delete_see_the_inputs(sample_host: ProviderHost, tmp_path: Path) -> None:
    """The token is an input the outputs never hold: read can check the token file only
    because the plugin passes the inputs; diff does not list it as added beside a real
    change, and delete, which refuses to remove a file without its token, succeeds, only
    because the plugin merges the last inputs under the outputs (the SDK alone passes
    diff and delete the outputs)."""
    path = tmp_path / "deep" / "local.txt"
    urn = sample_host.urn("local", SAMPLE_FILE)
    checked = sample_host.check(_props({"connection": "local"}, str(path)), urn=urn).inputs
    created = sample_host.create(checked, urn=urn)
    assert path.read_text() == "hello\n" and (path.stat().st_mode & 0o777) == 0o600
    assert "token" not in created.outputs

    read = sample_host.read(created.id, created.outputs, inputs=checked, urn=urn)
    assert read.outputs["token_ok"] is True and "token" not in read.outputs
    assert read.inputs == checked  # the inputs go back to the state unchanged

    changed = sample_host.check(_props({"connection": "local"}, str(path), "bye\n"), urn=urn)
    diff = sample_host.diff(
        created.id, created.outputs, changed.inputs, old_inputs=checked, urn=urn
    )
    assert (diff.changes, diff.detailed) == (True, {"content": "UPDATE"})  # no "+ token"

    with pytest.raises(ProviderCallError) as refused:  # the outputs alone, as the SDK passed
        sample_host.delete(created.id, created.outputs, urn=urn)
    assert refused.value.message.endswith(f"refusing to delete {path}: not its token")
    assert path.exists()
    sample_host.delete(created.id, created.outputs, old_inputs=checked, urn=urn)
    assert not path.exists() and not Path(f"{path}.token").exists()


# -- what the plugin server adds: width, plain amdfleet errors ---------------------------


def test_the_plugin_runs_thirty_two_provider_calls_at_once(sample_host: ProviderHost) -> None:
    """The SDK's dynamic-provider host served 4 calls at a time; the plugin lets every
    host of a fleet work at once: 32 creates meet at a barrier, which none of them passes
    until all 32 are inside the provider together (with fewer threads they never could,
    and each would fail after its timeout naming how many had arrived)."""
    parties = 32

    def create(index: int) -> str:
        props = {"group": "wide", "parties": parties, "index": index, "timeout_s": 60}
        return sample_host.create(props, urn=sample_host.urn(f"wide-{index}", RENDEZVOUS)).id

    with ThreadPoolExecutor(max_workers=parties) as pool:
        ids = sorted(pool.map(create, range(parties)))
    assert ids == sorted(f"wide-{i}" for i in range(parties))


def test_an_amdfleet_error_reaches_the_user_without_a_python_stack(
    sample_host: ProviderHost,
) -> None:
    urn = sample_host.urn("failing", FAILING)
    with pytest.raises(ProviderCallError) as caught:
        sample_host.create({"error": "amdfleet"}, urn=urn)
    expected = "amdfleet.errors.RemoteError: [host7] mkdir /opt/x failed\n  hint: check the disk\n"
    assert caught.value.details == expected
    with pytest.raises(ProviderCallError) as bug:
        sample_host.create({"error": "bug"}, urn=urn)
    assert "Traceback (most recent call last)" in bug.value.details  # a bug keeps its stack
    assert 'sample_provider.py", line' in bug.value.details  # down to the provider's frame
    assert bug.value.message == "RuntimeError: an unexpected bug"


# -- the real plugin: types, and stacks of the dynamic providers -------------------------


def test_an_unknown_type_is_refused_naming_the_served_ones(provider_host: ProviderHost) -> None:
    urn = provider_host.urn("web", "amdfleet:index:SshHots")
    with pytest.raises(ProviderCallError) as caught:
        provider_host.check({"host": {}}, urn=urn)
    message = caught.value.message
    assert message.startswith("amdfleet.errors.AmdFleetError: the amdfleet plugin ")
    assert "has no resource type amdfleet:index:SshHots; it serves " in message
    assert "amdfleet:index:SshHost, amdfleet:index:Verification\n  hint: " in message
    assert "Traceback" not in caught.value.details  # not a bug: a mismatched release


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 that accepts nothing: a connection attempt would wait in
    its backlog, where the test sees it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def _attempted(listener: socket.socket) -> bool:
    try:
        peer, _ = listener.accept()
    except BlockingIOError:
        return False
    peer.close()
    return True


def test_a_dynamic_resource_moves_to_the_plugin_without_touching_its_host(
    provider_host: ProviderHost, listener: socket.socket
) -> None:
    """State written by the dynamic providers: the outputs carry the provider pickled by
    the SDK (``serialize_provider``, a secret, as ``dynamic.Resource`` stored it). With
    equal inputs, Diff reports only ``__provider`` deleted, no replacement, and Update
    returns the outputs without it and without calling the provider: no connection
    reaches the host's SSH port. A real input change still goes to the provider."""
    port = listener.getsockname()[1]
    target = HostTarget(name="host9", address="127.0.0.1", port=port, host_key="SHA256:x")
    urn = provider_host.urn("fleet-host9", SshHost)
    inputs = provider_host.check(SshHostProps(host=target, requirement=CPU).to_inputs(), urn=urn)
    assert inputs.failures == []
    recorded = {"hostname": "host9", "facts": {"hostname": "host9", "cpu_count": 8.0}}
    legacy_outputs = {
        **inputs.inputs,
        **recorded,
        PROVIDER_KEY: secret(serialize_provider(SshHostProvider())),
    }

    # A dynamic resource had its pickled provider among its inputs too.
    legacy_inputs = {**inputs.inputs, PROVIDER_KEY: legacy_outputs[PROVIDER_KEY]}
    diff = provider_host.diff(
        "host9", legacy_outputs, inputs.inputs, old_inputs=legacy_inputs, urn=urn
    )
    assert (diff.changes, diff.replaces, diff.detailed) == (True, [], {PROVIDER_KEY: "DELETE"})
    moved = provider_host.update(
        "host9", legacy_outputs, inputs.inputs, old_inputs=legacy_inputs, urn=urn
    )
    expected = {k: v for k, v in legacy_outputs.items() if k != PROVIDER_KEY}
    assert moved == expected
    assert not _attempted(listener)

    elsewhere = SshHostProps(host=target, requirement=replace(CPU, weights_dir="/srv"))
    changed = provider_host.check(elsewhere.to_inputs(), urn=urn).inputs
    real = provider_host.diff("host9", legacy_outputs, changed, old_inputs=legacy_inputs, urn=urn)
    assert (real.changes, real.detailed) == (True, {"requirement": "UPDATE"})
