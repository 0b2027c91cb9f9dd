"""The Vultr bare-metal client against a real local HTTP server implementing Vultr's
documented API (tests/support/clouds/vultr_server.py; api.vultr.com is unreachable here,
and these tests rent nothing). Record shapes come from Vultr's reference examples in
../shared/fixtures/cloud-apis/vultr. Every test ends with the server's ledger showing
each server it created deleted (the ``vultr`` fixture checks it at teardown).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from amdfleet.clouds.api import (
    CapacityError,
    CreateRequest,
    InstanceState,
    RetryPolicy,
    UnknownSizeError,
    instance_tags,
)
from amdfleet.clouds.vultr import VultrAPI, instance_state, server_instance
from amdfleet.errors import CloudAPIError
from tests.support.clouds.vultr_server import FIXTURES, VultrServer

TOKEN = "VULTRTESTTOKEN7f3a9c2e1b"
MI300X = "vbm-256c-2048gb-8-mi300x-gpu"
STACK_TAG = "amdfleet-stack-prod"
USER_DATA = "#cloud-config\nssh_keys:\n  ed25519_public: ssh-ed25519 AAAAC3Nza host\n"


@pytest.fixture
def vultr() -> Iterator[VultrServer]:
    with VultrServer(TOKEN) as server:
        yield server
        assert server.ledger.leaked() == set(), "servers left behind"


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def api(vultr: VultrServer, waits: list[float]) -> Iterator[VultrAPI]:
    retry = RetryPolicy(attempts=4, base_s=1.0, max_s=30.0)
    with VultrAPI(TOKEN, base_url=vultr.url, retry=retry, sleep=waits.append) as client:
        yield client


def request(node: str = "0", *, region: str = "ord", stack: str = "prod") -> CreateRequest:
    return CreateRequest(
        name=f"amdfleet-{stack}-{node}",
        region=region,
        size=MI300X,
        image="2284",
        tags=instance_tags("llama", stack, node),
        user_data=USER_DATA,
        ssh_key_ids=("3b8066a7-b438-455a-9688-44afc9a3597f",),
    )


def test_create_boots_to_running_with_its_address_then_delete_is_idempotent(
    vultr: VultrServer, api: VultrAPI
) -> None:
    created = api.create(request())
    assert (created.state, created.status, created.public_address) == (
        InstanceState.PENDING,
        "pending/none",
        None,
    )
    assert (created.region, created.size, created.name) == ("ord", MI300X, "amdfleet-prod-0")
    assert created.tags == instance_tags("llama", "prod", "0")

    sent = next(r.body for r in vultr.requests if r.method == "POST")
    assert base64.b64decode(sent["user_data"]).decode() == USER_DATA
    assert (sent["os_id"], sent["plan"], sent["region"]) == (2284, MI300X, "ord")
    assert sent["sshkey_id"] == ["3b8066a7-b438-455a-9688-44afc9a3597f"]
    assert vultr.user_data(created.id) == USER_DATA

    polls = [api.get(created.id) for _ in range(3)]
    assert [(p.state, p.status) for p in polls if p] == [
        (InstanceState.PENDING, "pending/none"),
        (InstanceState.PENDING, "active/installingbooting"),
        (InstanceState.RUNNING, "active/ok"),
    ]
    running = polls[-1]
    assert running is not None and running.public_address
    assert running.public_address.startswith("192.0.2.")

    api.delete(created.id)
    assert api.get(created.id) is None
    api.delete(created.id)  # already gone: fine
    assert vultr.ledger.created == vultr.ledger.deleted == [created.id]
    assert all(r.authorized for r in vultr.requests)


def test_list_tagged_follows_the_cursor_across_pages(vultr: VultrServer, api: VultrAPI) -> None:
    vultr.page_limit = 2
    ours = [api.create(request(str(n))).id for n in range(3)]
    theirs = [api.create(request(str(n), stack="dev")).id for n in range(2)]

    found = api.list_tagged("amdfleet-stack-prod")

    assert sorted(i.id for i in found) == sorted(ours)
    lists = [
        r
        for r in vultr.requests
        if r.method == "GET" and r.path == "/v2/bare-metals" and r.query["tag"] == [STACK_TAG]
    ]
    assert len(lists) == 3  # 5 servers, 2 a page
    assert [("cursor" in r.query) for r in lists] == [False, True, True]
    assert {i.id for i in api.list_tagged("amdfleet")} == set(ours + theirs)
    for server_id in ours + theirs:
        api.delete(server_id)
    assert api.list_tagged("amdfleet") == []


def test_sizes_map_amd_gpu_plans_with_prices_and_regions(api: VultrAPI) -> None:
    offers = {o.slug: o for o in api.sizes()}

    mi300x = offers[MI300X]
    assert (mi300x.gpu_model, mi300x.gpu_count, mi300x.price_hourly) == ("mi300x", 8, 31.92)
    assert (mi300x.regions, mi300x.available) == (("ord", "sea"), True)
    mi325x = offers["vbm-256c-3072gb-8-mi325x-gpu"]
    assert (mi325x.gpu_model, mi325x.gpu_count, mi325x.regions) == ("mi325x", 8, ("ord",))
    mi355x = offers["vbm-256c-3072gb-8-mi355x-gpu"]
    assert (mi355x.gpu_model, mi355x.regions, mi355x.available) == ("mi355x", (), False)
    # Vultr's documented example plan: no GPU, only monthly_cost (300 / 730 h).
    cpu = offers["vbm-4c-32gb"]
    assert (cpu.gpu_model, cpu.gpu_count, cpu.price_hourly) == (None, 0, 0.41)
    assert cpu.regions == ("ewr",)


def test_documented_get_example_parses() -> None:
    body = json.loads((FIXTURES / "bare_metals_get.200.response.json").read_text())
    instance = server_instance(body["bare_metal"], "get")
    assert (instance.id, instance.state, instance.status) == (
        "cb676a46-66fd-4dfb-b839-443f2e6c0b60",
        InstanceState.PENDING,
        "pending",
    )
    assert (instance.public_address, instance.private_address) == ("192.0.2.123", None)
    assert (instance.tags, instance.size, instance.region) == (
        ("a tag", "another"),
        "vbm-4c-32gb",
        "ams",
    )


@pytest.mark.parametrize(
    ("status", "server_status", "state"),
    [
        ("pending", None, InstanceState.PENDING),
        ("pending", "none", InstanceState.PENDING),
        ("active", "installingbooting", InstanceState.PENDING),
        ("active", "locked", InstanceState.PENDING),
        ("active", "ok", InstanceState.RUNNING),
        ("active", None, InstanceState.RUNNING),
        ("resizing", "ok", InstanceState.PENDING),
        ("suspended", "ok", InstanceState.FAILED),
    ],
)
def test_status_words_map_to_states(
    status: str, server_status: str | None, state: InstanceState
) -> None:
    assert instance_state(status, server_status) == state


def test_429_waits_what_retry_after_says(
    vultr: VultrServer, api: VultrAPI, waits: list[float]
) -> None:
    vultr.rate_limit(retry_after=7, times=2)
    assert api.sizes()
    assert waits == [7.0, 7.0]
    assert [r.status for r in vultr.requests] == [429, 429, 200]


def test_500_then_success_backs_off(vultr: VultrServer, api: VultrAPI, waits: list[float]) -> None:
    created = api.create(request())
    vultr.fail(times=2)
    assert api.get(created.id) is not None
    assert waits == [1.0, 2.0]
    api.delete(created.id)
    assert vultr.ledger.created == [created.id]


def test_a_create_that_got_a_500_before_committing_is_sent_again(
    vultr: VultrServer, api: VultrAPI, waits: list[float]
) -> None:
    """The instance may exist after a 5xx: the POST is sent again only once the servers
    carrying the request's tags show no new one of its name."""
    vultr.fail(times=1, method="POST")
    created = api.create(request())
    posts = [r for r in vultr.requests if r.method == "POST"]
    assert [r.status for r in posts] == [500, 202]
    assert waits == [1.0] and vultr.ledger.created == [created.id]
    api.delete(created.id)


def test_500s_past_the_attempts_raise(
    vultr: VultrServer, api: VultrAPI, waits: list[float]
) -> None:
    vultr.fail(times=10)
    with pytest.raises(CloudAPIError, match=r"HTTP 500") as raised:
        api.sizes()
    assert raised.value.status == 500
    assert len(waits) == 3
    assert len(vultr.requests) == 4


def test_no_capacity_names_the_other_regions_listing_the_plan(
    vultr: VultrServer, api: VultrAPI
) -> None:
    vultr.no_capacity("ord", MI300X)
    with pytest.raises(CapacityError) as raised:
        api.create(request(region="ord"))
    error = raised.value
    assert (error.region, error.size, error.alternatives) == ("ord", MI300X, ("sea",))
    assert "try sea" in str(error)
    assert "Plan is not available in the selected region" in str(error)
    assert error.status == 400 and "(HTTP 400)" in str(error)
    assert vultr.ledger.created == []


def test_a_plan_vultr_does_not_list_is_unknown_not_a_shortage(api: VultrAPI) -> None:
    bad = CreateRequest(
        name="x", region="ord", size="vbm-nope", image="2284", tags=(), user_data=""
    )
    with pytest.raises(UnknownSizeError) as raised:
        api.create(bad)
    error = raised.value
    assert not isinstance(error, CapacityError)
    assert error.status == 400
    assert "vbm-4c-32gb" in error.listed and MI300X in error.listed
    message = str(error)
    assert "unknown size 'vbm-nope': vultr does not list it; it lists " in message
    assert f"{MI300X}, vbm-256c-3072gb-8-mi325x-gpu, vbm-256c-3072gb-8-mi355x-gpu" in message
    assert "and 1 more (Invalid plan chosen.)" in message  # GPU plans first


def test_a_region_that_does_not_list_the_plan_names_those_that_do(api: VultrAPI) -> None:
    with pytest.raises(CapacityError) as raised:
        api.create(request(region="ewr"))
    assert raised.value.alternatives == ("ord", "sea")
    assert raised.value.status == 400
    assert "Invalid region chosen for this plan." in str(raised.value)


def test_another_refusal_is_the_clouds_own_message(vultr: VultrServer, api: VultrAPI) -> None:
    bad = CreateRequest(name="x", region="ord", size=MI300X, image="", tags=(), user_data="")
    with pytest.raises(CloudAPIError, match=r"HTTP 400.*Choose exactly one of os_id") as raised:
        api.create(bad)
    assert not isinstance(raised.value, CapacityError | UnknownSizeError)
    assert vultr.ledger.created == []


def test_server_stuck_in_provisioning_stays_pending(vultr: VultrServer, api: VultrAPI) -> None:
    vultr.stick()
    created = api.create(request())
    polls = [api.get(created.id) for _ in range(6)]
    assert {(p.state, p.status, p.public_address) for p in polls if p} == {
        (InstanceState.PENDING, "pending/none", None)
    }
    api.delete(created.id)


def test_deleted_out_of_band_reads_as_gone(vultr: VultrServer, api: VultrAPI) -> None:
    created = api.create(request())
    vultr.vanish(created.id)
    assert api.get(created.id) is None
    api.delete(created.id)
    assert api.list_tagged("amdfleet") == []
    assert vultr.ledger.vanished == [created.id]
    assert vultr.ledger.deleted == []


@pytest.mark.parametrize(
    ("body", "call"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "get"),
        (b'{"bare_metal": []}', "get"),
        (b'{"plans_metal": [{"id": "vbm-4c-32gb"}]}', "sizes"),
        (b'{"bare_metals": "none", "meta": {}}', "list"),
    ],
)
def test_malformed_response_is_reported(
    vultr: VultrServer, api: VultrAPI, body: bytes, call: str
) -> None:
    vultr.malform(body)
    with pytest.raises(CloudAPIError, match=r"\(HTTP 200\): malformed response"):
        if call == "get":
            api.get("cb676a46-66fd-4dfb-b839-443f2e6c0b60")
        elif call == "sizes":
            api.sizes()
        else:
            api.list_tagged("amdfleet")


def test_wrong_token_gets_vultrs_message_and_never_shows_a_token(
    vultr: VultrServer, waits: list[float]
) -> None:
    wrong = "WRONGTOKEN0123456789"
    with VultrAPI(wrong, base_url=vultr.url, sleep=waits.append) as client:
        with pytest.raises(CloudAPIError) as raised:
            client.create(request())
        text = f"{raised.value} {raised.value!r} {client!r}"
    assert raised.value.status == 401
    assert "Invalid API token." in str(raised.value)
    assert wrong not in text and TOKEN not in text
    assert waits == []
    assert vultr.ledger.created == []
    assert not vultr.requests[0].authorized
