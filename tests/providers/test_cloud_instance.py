"""CloudInstance through amdfleet's provider plugin, against the local cloud
API servers whose instances are real lab SSH hosts booted from the user-data amdfleet
sent (tests/support/clouds/lab_boot.py).

Every test ends by checking the server's ledger: every instance created was deleted
(by the provider or out of band), and no lab host still runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime.proto import engine_pb2

from amdfleet.providers.cloud_instance import CloudInstance, CloudInstanceProps
from amdfleet.remote.transport.ssh import connect
from amdfleet.remote.transport.target import HostTarget
from tests.support.clouds.digitalocean_server import DigitalOceanServer
from tests.support.clouds.hotaisle_server import HotAisleServer, offer
from tests.support.clouds.lab_boot import LabBoot
from tests.support.clouds.vultr_server import VultrServer
from tests.support.engine_log import EngineLog
from tests.support.hostlab import LabFactory, netns_available
from tests.support.prerequisites import missing
from tests.support.pulumi_host import (
    ProviderCallError,
    ProviderHost,
    resource_urn,
    reveal,
    secret,
)

pytestmark = pytest.mark.netns
URN = resource_urn("cloud", CloudInstance)

TOKEN = "tok-SECRET-3f9a7c21e5"
TEAM = "lab-team"
HOTAISLE_SIZE = "1x-mi300x-13c-224g-12288g"


@dataclass(frozen=True)
class UserKey:
    path: Path
    public: str


@pytest.fixture(scope="module")
def user_key(tmp_path_factory: pytest.TempPathFactory) -> UserKey:
    path = tmp_path_factory.mktemp("userkey") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester", "-f", str(path)],
        check=True,
    )
    return UserKey(path, Path(f"{path}.pub").read_text().strip())


@pytest.fixture
def lab(hostlab: LabFactory) -> Iterator[LabBoot]:
    del hostlab  # requested for its prerequisite checks (root, sshd, ip)
    if not netns_available():
        missing("netns", "cloud instances as lab hosts need netns mode (they answer on port 22)")
    with LabBoot() as boot:
        yield boot
        assert boot.running() == [], "a lab host outlived its instance"


@pytest.fixture
def digitalocean(lab: LabBoot) -> Iterator[DigitalOceanServer]:
    with DigitalOceanServer.start(TOKEN, lab=lab) as server:
        yield server
        assert server.leaked() == [] and sorted(server.created) == sorted(
            server.deleted + server.vanished
        )


@pytest.fixture
def vultr(lab: LabBoot) -> Iterator[VultrServer]:
    with VultrServer(TOKEN, lab=lab) as server:
        yield server
        assert server.ledger.leaked() == set() and server.ledger.created


@pytest.fixture
def hotaisle(lab: LabBoot) -> Iterator[HotAisleServer]:
    offers = [offer(1, "MI300X", cpu_cores=13, ram_gib=224, disk_gib=12288, price_cents=199)]
    with HotAisleServer(TOKEN, TEAM, offers, lab=lab) as server:
        yield server
        assert server.leaked() == []


CLOUDS = {
    "digitalocean": {"region": "atl1", "size": "gpu-mi300x1-192gb", "image": "ubuntu-rocm"},
    "vultr": {"region": "ord", "size": "vbm-256c-2048gb-8-mi300x-gpu", "image": "2284"},
    "hotaisle": {"region": "us-michigan-1", "size": HOTAISLE_SIZE, "image": "", "team": TEAM},
}


def _inputs(
    host: ProviderHost, provider: str, url: str, key: UserKey, **override: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "provider": provider,
        "api_url": url,
        "name": "node-0",
        "user": "root",
        "authorized_key": key.public,
        "ssh_key_path": str(key.path),
        "boot_timeout_s": 30,
        "poll_interval_s": 0.05,
        "tags": ("amdfleet", "amdfleet-stack-test", "amdfleet-node-0"),
        **CLOUDS[provider],
        **override,
    }
    props = CloudInstanceProps.model_validate(fields)
    return host.check(props.to_inputs(api_token=secret(TOKEN)), urn=URN).inputs


def _url(server: DigitalOceanServer | VultrServer | HotAisleServer) -> str:
    return server.url


def _no_secret_in(outputs: dict[str, Any]) -> None:
    text = json.dumps(reveal({k: v for k, v in outputs.items() if k != "__provider"}))
    assert TOKEN not in text
    assert "PRIVATE KEY" not in text
    assert "api_token" not in outputs


@pytest.mark.parametrize("cloud", ["digitalocean", "vultr"])
def test_create_pins_the_injected_host_key_and_delete_confirms(
    cloud: str,
    request: pytest.FixtureRequest,
    provider_host: ProviderHost,
    lab: LabBoot,
    user_key: UserKey,
) -> None:
    server = request.getfixturevalue(cloud)
    checked = _inputs(provider_host, cloud, _url(server), user_key)
    created = provider_host.create(checked, urn=URN)
    out = created.outputs
    assert out["instance_id"] == created.id and lab.running() == [created.id]
    # the key amdfleet generated and sent in the user-data is the one the host presents
    assert out["host_key"].split()[:2] == lab.host_key(created.id).split()[:2]
    assert out["public_address"].startswith("10.77.") and out["status"].startswith("active")
    _no_secret_in(out)
    target = HostTarget(
        name="node-0",
        address=out["public_address"],
        user="root",
        key_path=str(user_key.path),
        host_key=out["host_key"],
    )
    with connect(target, timeout=10) as conn:  # the pinned key and the user's key work
        assert conn.run("id -un", timeout=10).stdout.strip() == "root"
    provider_host.delete(created.id, out, old_inputs=checked, urn=URN)
    assert lab.running() == []
    provider_host.delete(
        created.id, out, old_inputs=checked, urn=URN
    )  # again: already gone is fine


@pytest.mark.parametrize("cloud", ["digitalocean", "vultr", "hotaisle"])
def test_a_create_answered_500_after_the_commit_adopts_the_instance_and_pins_it(
    cloud: str,
    request: pytest.FixtureRequest,
    provider_host: ProviderHost,
    lab: LabBoot,
    user_key: UserKey,
) -> None:
    """The cloud rents the instance (a real lab host booted from the user-data sent) and
    answers 500: the provider's create adopts that one instance, and its host key is the
    one pinned (the same user-data, so the same key), with no second instance rented."""
    server = request.getfixturevalue(cloud)
    server.after_create = "500"
    extra = {"trust_first_use": True} if cloud == "hotaisle" else {}
    checked = _inputs(provider_host, cloud, _url(server), user_key, **extra)
    created = provider_host.create(checked, urn=URN)
    assert lab.booted == [created.id], "exactly one instance rented, the one adopted"
    assert created.outputs["host_key"].split()[:2] == lab.host_key(created.id).split()[:2]
    provider_host.delete(created.id, created.outputs, old_inputs=checked, urn=URN)
    assert lab.running() == []


def test_stuck_in_provisioning_is_deleted_at_the_deadline(
    provider_host: ProviderHost, digitalocean: DigitalOceanServer, user_key: UserKey
) -> None:
    digitalocean.stuck = True
    checked = _inputs(provider_host, "digitalocean", digitalocean.url, user_key, boot_timeout_s=1)
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "CloudInstanceError" in message and "still 'new' after 1 s" in message
    assert "the instance was deleted (the cloud confirmed it is gone)" in message
    assert "digitalocean instance 5" in message and "in atl1" in message
    assert TOKEN not in message
    assert len(digitalocean.created) == 1 and digitalocean.deleted == digitalocean.created


def test_failed_state_deletes_the_instance(
    provider_host: ProviderHost, hotaisle: HotAisleServer, user_key: UserKey
) -> None:
    hotaisle.inject("state", 200, {"state": "crashed", "host": "hv-07"}, times=100)
    checked = _inputs(provider_host, "hotaisle", hotaisle.url, user_key, trust_first_use=True)
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "reports it failed (status 'crashed')" in message
    assert "the instance was deleted" in message and TOKEN not in message
    assert hotaisle.created == hotaisle.deleted == ["vm-01"]


def test_429_and_500_during_create_and_poll_are_survived(
    provider_host: ProviderHost, digitalocean: DigitalOceanServer, lab: LabBoot, user_key: UserKey
) -> None:
    digitalocean.fail(429, retry_after="1", method="POST", path="/v2/droplets")
    digitalocean.fail(500, method="GET", path="/v2/droplets/")
    checked = _inputs(provider_host, "digitalocean", digitalocean.url, user_key)
    created = provider_host.create(checked, urn=URN)
    statuses = [r.method for r in digitalocean.log if r.path == "/v2/droplets"]
    assert statuses.count("POST") == 2 and len(digitalocean.created) == 1
    assert created.outputs["host_key"].split()[:2] == lab.host_key(created.id).split()[:2]
    provider_host.delete(created.id, created.outputs, old_inputs=checked, urn=URN)


def test_no_capacity_names_the_other_regions_and_creates_nothing(
    provider_host: ProviderHost, digitalocean: DigitalOceanServer, user_key: UserKey
) -> None:
    digitalocean.no_capacity.add(("gpu-mi300x1-192gb", "atl1"))
    checked = _inputs(provider_host, "digitalocean", digitalocean.url, user_key)
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    assert "CapacityError" in caught.value.message
    assert "no capacity in atl1 for gpu-mi300x1-192gb: try nyc2" in caught.value.message
    assert digitalocean.created == []


def test_refresh_of_a_vanished_instance_reports_it_gone_and_delete_succeeds(
    provider_host: ProviderHost, vultr: VultrServer, lab: LabBoot, user_key: UserKey
) -> None:
    checked = _inputs(provider_host, "vultr", vultr.url, user_key)
    created = provider_host.create(checked, urn=URN)
    read = provider_host.read(created.id, created.outputs, inputs=checked, urn=URN)
    assert (
        read.id == created.id
        and read.outputs["public_address"] == created.outputs["public_address"]
    )
    _no_secret_in(read.outputs)
    vultr.vanish(created.id)
    assert lab.running() == []
    gone = provider_host.read(created.id, created.outputs, inputs=checked, urn=URN)
    assert gone.id == ""
    provider_host.delete(created.id, created.outputs, old_inputs=checked, urn=URN)
    assert vultr.ledger.vanished == [created.id] and vultr.ledger.deleted == []


def test_malformed_response_while_polling_deletes_and_leaks_nothing(
    provider_host: ProviderHost, digitalocean: DigitalOceanServer, user_key: UserKey
) -> None:
    digitalocean.malform(method="GET", path="/v2/droplets/")
    checked = _inputs(provider_host, "digitalocean", digitalocean.url, user_key)
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "malformed response" in message and "the instance was deleted" in message
    assert TOKEN not in message and "PRIVATE KEY" not in message
    assert len(digitalocean.created) == 1 and digitalocean.deleted == digitalocean.created


def test_hotaisle_without_trust_first_use_is_refused_before_any_call(
    provider_host: ProviderHost, hotaisle: HotAisleServer, user_key: UserKey
) -> None:
    checked = _inputs(provider_host, "hotaisle", hotaisle.url, user_key)
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "trust_first_use" in message and "hotaisle takes no cloud-init user-data" in message
    assert hotaisle.calls == []


def test_hotaisle_with_trust_first_use_pins_the_first_seen_key(
    provider_host: ProviderHost, hotaisle: HotAisleServer, lab: LabBoot, user_key: UserKey
) -> None:
    checked = _inputs(provider_host, "hotaisle", hotaisle.url, user_key, trust_first_use=True)
    created = provider_host.create(checked, urn=URN)
    assert created.id == "vm-01" and hotaisle.ssh_keys == [user_key.public]
    assert created.outputs["host_key"].split()[:2] == lab.host_key("vm-01").split()[:2]
    _no_secret_in(created.outputs)
    provider_host.delete(created.id, created.outputs, old_inputs=checked, urn=URN)
    assert hotaisle.deleted == ["vm-01"]


def test_diff_replaces_on_inputs_but_not_on_token_or_timing(
    provider_host: ProviderHost, digitalocean: DigitalOceanServer, user_key: UserKey
) -> None:
    olds = _inputs(provider_host, "digitalocean", digitalocean.url, user_key)
    rotated = {**olds, "api_token": secret("another-token"), "boot_timeout_s": 99.0}
    assert provider_host.diff("1", olds, rotated, old_inputs=olds, urn=URN).changes is False
    bigger = {**olds, "size": "gpu-mi300x8-1536gb"}
    assert provider_host.diff("1", olds, bigger, old_inputs=olds, urn=URN).replaces == ["size"]
    assert digitalocean.created == []


def test_another_host_key_is_not_retried_and_the_instance_is_deleted(
    provider_host: ProviderHost, vultr: VultrServer, lab: LabBoot, user_key: UserKey
) -> None:
    lab.impostor = True
    checked = _inputs(provider_host, "vultr", vultr.url, user_key, boot_timeout_s=120)
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "waiting for SSH with the pinned host key failed: " in message
    assert "host key mismatch" in message and "man-in-the-middle" in message
    assert "the instance was deleted" in message
    [server_id] = vultr.ledger.created
    assert vultr.ledger.deleted == [server_id]
    # one connection was enough: the user's key never got to authenticate anywhere
    assert lab.booted == [server_id]


def test_trust_on_first_use_is_reported_as_a_warning(
    provider_host: ProviderHost,
    engine_log: EngineLog,
    hotaisle: HotAisleServer,
    lab: LabBoot,
    user_key: UserKey,
) -> None:
    urn = provider_host.urn("cloud-tofu", CloudInstance)
    checked = _inputs(provider_host, "hotaisle", hotaisle.url, user_key, trust_first_use=True)
    created = provider_host.create(checked, urn=urn)
    warning = engine_log.wait_for(lambda e: e.urn == urn and e.severity == engine_pb2.WARNING)
    assert "trusted the key seen on first use" in warning.message
    assert created.outputs["host_key"] in warning.message
    assert all(TOKEN not in m for m in engine_log.messages(urn))
    provider_host.delete(created.id, created.outputs, old_inputs=checked, urn=urn)
