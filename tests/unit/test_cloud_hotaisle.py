"""The Hot Aisle client against a real local HTTP server implementing Hot Aisle's documented
VM endpoints (tests/support/clouds/hotaisle_server.py, built from Hot Aisle's own
swagger.json in ../shared/fixtures/cloud-apis/hotaisle/).

Hot Aisle's swagger documents field names and per-field examples but no prices and no
whole bodies: one VM type here is the swagger's own example ``Specs``; the others, and
every price, are test values (what is checked is the mapping, e.g. US cents → USD).
Every test ends with the server's ledger balanced (each VM provisioned was deleted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import httpx
import pytest

from amdfleet.clouds.api import (
    CapacityError,
    CreateRequest,
    InstanceState,
    UnknownSizeError,
    instance_tags,
)
from amdfleet.clouds.hotaisle import REGION, HotAisleClient, addresses, describe
from amdfleet.errors import CloudAPIError
from tests.support.clouds.hotaisle_server import HotAisleServer, offer, swagger_example

TOKEN = "ha-test-0123456789abcdef-secret"
TEAM = "llama-team"
ONE_GPU = "1x-mi300x-13c-224g-12288g"
EIGHT_GPU = "8x-mi300x-104c-1792g-12288g"
SWAGGER_TYPE = "4x-mi300x-8c-32g-100g"


@pytest.fixture
def server() -> Iterator[HotAisleServer]:
    offers = [
        offer(1, "MI300X", cpu_cores=13, ram_gib=224, disk_gib=12288, price_cents=199),
        offer(8, "MI300X", cpu_cores=104, ram_gib=1792, disk_gib=12288, price_cents=1592),
        offer(8, "MI325X", cpu_cores=104, ram_gib=2048, disk_gib=12288, price_cents=0, quantity=0),
        {**swagger_example("AvailableVirtualMachineTypes"), "OnDemandPrice": 796},
    ]
    with HotAisleServer(TOKEN, TEAM, offers, boot_polls=2) as api:
        yield api
        assert sorted(api.created) == sorted(api.deleted), f"leaked VMs: {api.leaked()}"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(server: HotAisleServer, sleeps: list[float]) -> Iterator[HotAisleClient]:
    with HotAisleClient(TOKEN, TEAM, base_url=server.url, sleep=sleeps.append) as c:
        yield c


def request(node: str = "0", stack: str = "prod", size: str = ONE_GPU) -> CreateRequest:
    return CreateRequest(
        name=f"amdfleet-llama-{stack}-{node}",
        region=REGION,
        size=size,
        image="",
        tags=instance_tags("llama", stack, node),
        user_data="",
    )


def test_create_then_poll_until_running(client: HotAisleClient, server: HotAisleServer) -> None:
    vm = client.create(request())
    polls = [vm.state]
    while polls[-1] is not InstanceState.RUNNING and len(polls) < 5:
        again = client.get(vm.id)
        assert again is not None
        polls.append(again.state)
    assert polls == [InstanceState.PENDING, InstanceState.PENDING, InstanceState.RUNNING]
    assert (vm.id, vm.name, vm.status, vm.region, vm.size) == (
        "vm-01",
        "amdfleet-llama-prod-0",
        "shut off",
        REGION,
        ONE_GPU,
    )
    assert (vm.public_address, vm.private_address) == ("203.0.113.11", "10.20.0.11")
    assert vm.tags == instance_tags("llama", "prod", "0")
    provision = next(c for c in server.calls if c.method == "POST")
    assert provision.body == server.offers[0]["Specs"]
    assert provision.authorization == f"Token {TOKEN}"
    assert server.details("vm-01")["description"] == describe(vm.name, vm.tags)
    client.delete(vm.id)


def test_delete_is_forced_and_idempotent(client: HotAisleClient, server: HotAisleServer) -> None:
    vm = client.create(request())
    client.delete(vm.id)
    assert client.get(vm.id) is None
    client.delete(vm.id)
    deletes = [c for c in server.calls if c.method == "DELETE"]
    forced = {"force": ["true"]}
    assert [(c.status, c.query) for c in deletes] == [(204, forced), (404, forced)]
    assert server.deleted == ["vm-01"]


def test_list_tagged_finds_only_amdfleet_vms(
    client: HotAisleClient, server: HotAisleServer
) -> None:
    """Hot Aisle's VM list is one unpaged array: the test checks filtering by the marker
    in the description, with a VM someone else rented (no description) in the team."""
    mine = [
        client.create(request(node=n, stack=s)) for n, s in [("0", "a"), ("1", "a"), ("0", "b")]
    ]
    foreign = httpx.post(
        f"{server.url}/teams/{TEAM}/virtual_machines/",
        json={"gpus": [{"count": 1, "manufacturer": "AMD", "model": "MI300X"}]},
        headers={"Authorization": f"Token {TOKEN}"},
    ).json()["name"]
    stack_a = client.list_tagged("amdfleet-stack-a")
    assert sorted(i.name for i in stack_a) == ["amdfleet-llama-a-0", "amdfleet-llama-a-1"]
    assert sorted(i.id for i in client.list_tagged("amdfleet")) == sorted(i.id for i in mine)
    everything = {i.id: i for i in client.list_all()}
    assert set(everything) == {*(i.id for i in mine), foreign}
    assert everything[foreign].tags == ()
    for vm_id in everything:
        client.delete(vm_id)


def test_sizes_map_gpus_prices_and_availability(client: HotAisleClient) -> None:
    sizes = {s.slug: s for s in client.sizes()}
    assert set(sizes) == {ONE_GPU, EIGHT_GPU, "8x-mi325x-104c-2048g-12288g", SWAGGER_TYPE}
    one = sizes[ONE_GPU]
    assert (one.gpu_model, one.gpu_count, one.price_hourly, one.regions, one.available) == (
        "mi300x",
        1,
        1.99,
        (REGION,),
        True,
    )
    assert sizes[EIGHT_GPU].price_hourly == 15.92
    assert sizes["8x-mi325x-104c-2048g-12288g"].gpu_model == "mi325x"
    assert sizes["8x-mi325x-104c-2048g-12288g"].available is False
    assert (sizes[SWAGGER_TYPE].gpu_model, sizes[SWAGGER_TYPE].gpu_count) == ("mi300x", 4)


def test_429_waits_what_retry_after_says(
    client: HotAisleClient, server: HotAisleServer, sleeps: list[float]
) -> None:
    server.throttle("available", "7", times=2)
    server.throttle("provision", "3")
    vm = client.create(request())
    assert sleeps == [7.0, 7.0, 3.0]
    assert server.created == ["vm-01"]
    client.delete(vm.id)


def test_500_on_a_read_is_retried(
    client: HotAisleClient, server: HotAisleServer, sleeps: list[float]
) -> None:
    server.fail("list", times=2)
    assert client.list_all() == []
    assert sleeps == [1.0, 2.0]


def test_500_on_provision_is_not_retried(
    client: HotAisleClient, server: HotAisleServer, sleeps: list[float]
) -> None:
    """A failed provision may have rented a VM; retrying could rent a second one. The VM
    list is looked at after each backoff instead (nothing new here)."""
    server.fail("provision")
    with pytest.raises(CloudAPIError, match=r"HTTP 500.*Internal Server Error") as e:
        client.create(request())
    assert e.value.status == 500
    assert "no new unmarked" in str(e.value)
    assert [c.method for c in server.calls].count("POST") == 1
    lists = [c for c in server.calls if c.method == "GET" and c.path.endswith("machines/")]
    assert len(sleeps) == len(lists) - 1  # one look before the POST, one after each wait


def test_no_free_vm_of_the_size_is_a_capacity_error(
    client: HotAisleClient, server: HotAisleServer
) -> None:
    with pytest.raises(CapacityError) as e:
        client.create(request(size="8x-mi325x-104c-2048g-12288g"))
    assert e.value.alternatives == ()
    assert "no other region lists it" in str(e.value)
    assert ONE_GPU in str(e.value)
    assert not any(c.method == "POST" for c in server.calls)


def test_provision_404_is_a_capacity_error(client: HotAisleClient, server: HotAisleServer) -> None:
    server.no_capacity = True
    with pytest.raises(CapacityError, match="No available virtual machine matching") as e:
        client.create(request())
    assert (e.value.region, e.value.size, e.value.alternatives) == (REGION, ONE_GPU, ())
    assert e.value.status == 404
    assert "(HTTP 404)" in str(e.value)


def test_a_size_the_team_does_not_list_is_unknown_not_a_shortage(
    client: HotAisleClient, server: HotAisleServer
) -> None:
    with pytest.raises(UnknownSizeError) as e:
        client.create(request(size="1x-mi300x-8c-64g-100g"))
    assert not isinstance(e.value, CapacityError)
    assert e.value.listed == (ONE_GPU, EIGHT_GPU, "8x-mi325x-104c-2048g-12288g", SWAGGER_TYPE)
    message = str(e.value)
    assert "unknown size '1x-mi300x-8c-64g-100g': hotaisle does not list it" in message
    assert (
        f"it lists {ONE_GPU}, {EIGHT_GPU}, 8x-mi325x-104c-2048g-12288g, {SWAGGER_TYPE}" in message
    )
    assert not any(c.method == "POST" for c in server.calls)


def test_a_stuck_vm_stays_pending(client: HotAisleClient, server: HotAisleServer) -> None:
    vm = client.create(request())
    server.stuck(vm.id)
    states = []
    for _ in range(5):
        got = client.get(vm.id)
        assert got is not None
        states.append((got.state, got.status))
    assert states == [(InstanceState.PENDING, "shut off")] * 5
    client.delete(vm.id)


def test_out_of_band_deletion(client: HotAisleClient, server: HotAisleServer) -> None:
    vm = client.create(request())
    server.vanish(vm.id)
    assert client.get(vm.id) is None
    assert client.list_tagged("amdfleet") == []
    client.delete(vm.id)


def test_create_deletes_a_vm_it_cannot_mark(client: HotAisleClient, server: HotAisleServer) -> None:
    server.fail("describe", times=5)
    with pytest.raises(CloudAPIError, match="describe instance failed"):
        client.create(request())
    assert server.created == server.deleted == ["vm-01"]


@pytest.mark.parametrize(
    ("route", "call"),
    [
        ("get", lambda c: c.get("vm-01")),
        ("state", lambda c: c.get("vm-01")),
        ("list", lambda c: c.list_all()),
        ("available", lambda c: c.sizes()),
    ],
)
def test_malformed_response(
    client: HotAisleClient,
    server: HotAisleServer,
    route: str,
    call: Callable[[HotAisleClient], object],
) -> None:
    vm = client.create(request())
    server.malform(route)
    with pytest.raises(CloudAPIError, match="malformed response"):
        call(client)
    client.delete(vm.id)


def test_malformed_state_during_create_deletes_the_vm(
    client: HotAisleClient, server: HotAisleServer
) -> None:
    server.inject("state", 200, {"power": "on"})
    with pytest.raises(CloudAPIError, match="malformed response: no 'state'"):
        client.create(request())
    assert server.deleted == ["vm-01"]


def test_wrong_token_is_a_clear_error_without_the_token(server: HotAisleServer) -> None:
    wrong = "ha-wrong-token-fedcba9876543210"
    with HotAisleClient(wrong, TEAM, base_url=server.url) as bad:
        with pytest.raises(CloudAPIError) as e:
            bad.sizes()
        assert wrong not in repr(bad)
    assert e.value.status == 401
    assert str(e.value) == "hotaisle: list sizes failed (HTTP 401): Unauthorized"
    assert server.calls[0].authorization == f"Token {wrong}"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_data": "#cloud-config\nssh_keys: {}\n"}, "user_data"),
        ({"ssh_key_ids": ("1234",)}, "ssh_key_ids"),
        ({"image": "ubuntu-22.04"}, "image"),
        ({"region": "us-east-1"}, "region='us-east-1'"),
        ({"name": "two words"}, "name: 'two words'"),
    ],
)
def test_requests_hot_aisle_cannot_take_are_refused(
    client: HotAisleClient, server: HotAisleServer, change: dict[str, object], field: str
) -> None:
    bad = dataclasses.replace(request(), **change)  # type: ignore[arg-type]
    with pytest.raises(CloudAPIError, match="create instance failed") as e:
        client.create(bad)
    assert field in str(e.value)
    assert server.calls == []


def test_user_data_url_is_passed_on(client: HotAisleClient, server: HotAisleServer) -> None:
    vm = client.create(request(), user_data_url="https://example.invalid/node0.yaml")
    assert server.user_data_url(vm.id) == "https://example.invalid/node0.yaml"
    client.delete(vm.id)


def test_add_ssh_key_twice(client: HotAisleClient, server: HotAisleServer) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsx amdfleet@test"
    client.add_ssh_key(key)
    client.add_ssh_key(key)
    assert server.ssh_keys == [key]
    assert [c.status for c in server.calls] == [200, 409]


@pytest.mark.parametrize(
    ("ip", "ssh_ip", "expected"),
    [
        ("10.20.0.5", "203.0.113.10", ("203.0.113.10", "10.20.0.5")),
        ("192.168.1.200", None, (None, "192.168.1.200")),
        ("8.8.4.4", None, ("8.8.4.4", None)),
        ("2001:db8::1", {"not": "an address"}, (None, None)),
        (None, None, (None, None)),
    ],
)
def test_addresses(ip: object, ssh_ip: object, expected: tuple[str | None, str | None]) -> None:
    assert addresses(ip, ssh_ip) == expected
