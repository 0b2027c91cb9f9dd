"""No rented instance is lost: a create the cloud committed but whose answer never reached
amdfleet (a 500 after the commit, a dropped connection, an answer slower than the read
timeout) ends with exactly one instance, adopted by the create itself; and one whose
client died before the answer carries from birth the tags ``amdfleet cloud orphans``
finds it by.

Each cloud is a real local HTTP server implementing its documented API
(tests/support/clouds/: DigitalOcean, Vultr, Hot Aisle), with the fault injected after
the commit (``after_create``); no request leaves this machine. Retries' waits are
recorded, not slept; the read timeout is real (0.5 s).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from amdfleet.clouds.api import CloudClient, CreateRequest, Instance, RetryPolicy, instance_tags
from amdfleet.clouds.digitalocean import DigitalOceanClient
from amdfleet.clouds.digitalocean import create_body as droplet_body
from amdfleet.clouds.hotaisle import REGION, HotAisleClient
from amdfleet.clouds.orphans import delete_orphans, find_orphans, unmarked
from amdfleet.clouds.vultr import VultrAPI
from amdfleet.clouds.vultr import create_body as bare_metal_body
from amdfleet.errors import CloudAPIError
from tests.support.clouds import http
from tests.support.clouds.digitalocean_server import DigitalOceanServer
from tests.support.clouds.hotaisle_server import HotAisleServer, offer
from tests.support.clouds.http import AfterCreate
from tests.support.clouds.vultr_server import VultrServer

TOKEN = "lost-answers-token-3e9d41"
TEAM = "lab-team"
READ_TIMEOUT_S = 0.5
RETRY = RetryPolicy(attempts=3, base_s=1.0, max_s=4.0)
FAULTS: tuple[AfterCreate, ...] = ("500", "drop", "hang")


@dataclass
class Cloud:
    """One local cloud server, a client of it, and how to read the server's ledger."""

    name: str
    server: Any
    client: CloudClient
    request: CreateRequest
    created: Callable[[], list[str]]
    existing: Callable[[], list[str]]
    waits: list[float]


def _request(project: str, size: str, region: str, image: str, user_data: str) -> CreateRequest:
    return CreateRequest(
        name="lost-node0",
        region=region,
        size=size,
        image=image,
        tags=instance_tags(project, "prod", "node0"),
        user_data=user_data,
    )


@contextlib.contextmanager
def _cloud(name: str) -> Iterator[Cloud]:
    waits: list[float] = []
    user_data = "#cloud-config\n"
    if name == "digitalocean":
        with DigitalOceanServer.start(TOKEN) as do:
            client = DigitalOceanClient(
                TOKEN, base_url=do.url, retry=RETRY, sleep=waits.append, timeout=READ_TIMEOUT_S
            )
            request = _request("demo", "gpu-mi300x8-1536gb", "atl1", "gpu-amd-base", user_data)
            with client:
                yield Cloud(
                    name,
                    do,
                    client,
                    request,
                    lambda: [str(i) for i in do.created],
                    lambda: [str(i) for i in do.leaked()],
                    waits,
                )
    elif name == "vultr":
        with VultrServer(TOKEN) as vultr:
            client = VultrAPI(
                TOKEN,
                base_url=vultr.url,
                retry=RETRY,
                sleep=waits.append,
                timeout=READ_TIMEOUT_S,
            )
            request = _request("demo", "vbm-256c-2048gb-8-mi300x-gpu", "ord", "2284", user_data)
            with client:
                yield Cloud(
                    name,
                    vultr,
                    client,
                    request,
                    lambda: list(vultr.ledger.created),
                    lambda: sorted(vultr.ledger.leaked()),
                    waits,
                )
    else:
        offers = [offer(1, "MI300X", cpu_cores=13, ram_gib=224, disk_gib=12288, price_cents=199)]
        with HotAisleServer(TOKEN, TEAM, offers) as hotaisle:
            client = HotAisleClient(
                TOKEN,
                TEAM,
                base_url=hotaisle.url,
                retry=RETRY,
                sleep=waits.append,
                blocking_timeout_s=READ_TIMEOUT_S,
            )
            request = _request("demo", "1x-mi300x-13c-224g-12288g", REGION, "", "")
            with client:
                yield Cloud(
                    name,
                    hotaisle,
                    client,
                    request,
                    lambda: hotaisle.created,
                    hotaisle.leaked,
                    waits,
                )


@pytest.fixture(params=["digitalocean", "vultr", "hotaisle"])
def cloud(request: pytest.FixtureRequest) -> Iterator[Cloud]:
    with _cloud(request.param) as made:
        yield made
        assert made.existing() == [], f"{made.name}: instances left behind"


@pytest.mark.parametrize("fault", FAULTS)
def test_a_committed_create_whose_answer_is_lost_adopts_the_one_instance(
    cloud: Cloud, fault: AfterCreate
) -> None:
    """The cloud rented the instance, then answered 500, dropped the connection or hung
    past the read timeout: the create returns that instance, and no second one exists."""
    cloud.server.after_create = fault
    made = cloud.client.create(cloud.request)
    assert cloud.created() == [made.id], "exactly one instance, the one returned"
    assert made.name == cloud.request.name
    assert set(cloud.request.tags) <= set(made.tags), "adopted and marked with its tags"
    assert cloud.existing() == [made.id]
    cloud.client.delete(made.id)


def test_a_create_refused_with_500_before_any_commit_is_sent_again(cloud: Cloud) -> None:
    """A 500 with nothing rented (DigitalOcean, Vultr): the search finds nothing new, so the
    POST is sent again and rents exactly one. Hot Aisle's provision request carries no
    mark, so its POST is never sent twice: the error says nothing new was listed."""
    if cloud.name == "digitalocean":
        cloud.server.fail(500, method="POST", path="/v2/droplets")
    elif cloud.name == "vultr":
        cloud.server.fail(1, method="POST")
    else:
        cloud.server.fail("provision")
        with pytest.raises(CloudAPIError) as caught:
            cloud.client.create(cloud.request)
        assert caught.value.status == 500
        assert "no new unmarked 1x-mi300x-13c-224g-12288g VM is listed" in str(caught.value)
        assert "amdfleet cloud orphans --provider hotaisle" in str(caught.value)
        assert cloud.created() == []
        return
    made = cloud.client.create(cloud.request)
    assert cloud.created() == [made.id]
    assert cloud.waits == [1.0]
    cloud.client.delete(made.id)


@pytest.mark.parametrize("name", ["digitalocean", "vultr"])
def test_an_older_instance_of_the_same_name_and_tags_is_not_adopted(name: str) -> None:
    """While a replacement is created the old instance (same name and tags, owned by the
    state) still exists: a lost answer must adopt the new one, never the old. (Hot Aisle
    adopts only an unmarked VM, and the old one is marked.)"""
    with _cloud(name) as cloud:
        old = cloud.client.create(cloud.request)
        cloud.server.after_create = "drop"
        new = cloud.client.create(cloud.request)
        assert new.id != old.id
        assert cloud.created() == [old.id, new.id]
        for instance in (old, new):
            cloud.client.delete(instance.id)
        assert cloud.existing() == []


def test_hot_aisle_does_not_guess_between_several_unmarked_vms() -> None:
    """Two new unmarked VMs of the size (another client of the team provisioned one by
    hand meanwhile): amdfleet cannot tell which is its own, adopts neither and names
    both."""
    with _cloud("hotaisle") as cloud:
        server: HotAisleServer = cloud.server
        by_hand = HotAisleClient(TOKEN, TEAM, base_url=server.url, sleep=cloud.waits.append)
        server.after_create = "500"
        original = by_hand._vm_details
        calls = []

        def listing_after_a_rival() -> list[dict[str, Any]]:
            calls.append(1)
            if len(calls) == 2:  # between the lost answer and the search
                server.after_create = "answer"
                httpx.post(
                    f"{server.url}/teams/{TEAM}/virtual_machines/",
                    json=dict(server.offers[0]["Specs"]),
                    headers={"Authorization": f"Token {TOKEN}"},
                )
            return original()

        by_hand._vm_details = listing_after_a_rival  # type: ignore[method-assign]
        with by_hand, pytest.raises(CloudAPIError) as caught:
            by_hand.create(cloud.request)
        message = str(caught.value)
        assert "several new unmarked 1x-mi300x-13c-224g-12288g VMs are listed" in message
        assert "'vm-01'" in message and "'vm-02'" in message
        for name in server.leaked():
            cloud.client.delete(name)


@pytest.mark.parametrize("name", ["digitalocean", "vultr"])
def test_an_instance_whose_creator_died_is_found_by_its_tags_and_deleted(name: str) -> None:
    """The client died after sending the POST (nobody retries, nobody adopts): the
    instance carries from birth the project's tags, so the orphan search finds it and
    deletes it, and leaves the instance a stack owns alone."""
    with _cloud(name) as cloud:
        owned = cloud.client.create(replace(cloud.request, name="owned-node0"))
        cloud.server.after_create = "drop"
        if name == "digitalocean":
            path, body = "/v2/droplets", droplet_body(cloud.request)
        else:
            path, body = "/v2/bare-metals", bare_metal_body(cloud.request)
        with pytest.raises(httpx.TransportError):  # the answer never comes
            httpx.post(
                f"{cloud.server.url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        [lost] = [i for i in cloud.created() if i != owned.id]

        orphans = find_orphans(cloud.client, "demo", {owned.id})
        assert [o.instance.id for o in orphans] == [lost]
        assert (orphans[0].stack, orphans[0].node) == ("prod", "node0")
        assert delete_orphans(cloud.client, orphans, timeout_s=10, poll_s=0.1) == []
        assert cloud.existing() == [owned.id]
        cloud.client.delete(owned.id)


def test_a_hot_aisle_vm_whose_creator_died_is_listed_unmarked_not_deleted() -> None:
    """Hot Aisle cannot mark a VM at birth: one whose creator died before marking it is
    no tagged orphan (nothing proves it is amdfleet's), but the orphan search lists it as
    unmarked for the user to judge."""
    with _cloud("hotaisle") as cloud:
        server: HotAisleServer = cloud.server
        marked = cloud.client.create(cloud.request)
        answer = httpx.post(
            f"{server.url}/teams/{TEAM}/virtual_machines/",
            json=dict(server.offers[0]["Specs"]),
            headers={"Authorization": f"Token {TOKEN}"},
        )
        died = answer.json()["name"]
        assert find_orphans(cloud.client, "demo", {marked.id}) == []
        assert [i.id for i in unmarked(cloud.client)] == [died]
        for name in (marked.id, died):
            cloud.client.delete(name)


@pytest.mark.parametrize("name", ["digitalocean", "vultr"])
def test_spent_retries_say_the_instance_may_exist_and_how_it_is_found(name: str) -> None:
    """Every POST answered 500 (here: nothing committed, and each search found nothing):
    once the retries are spent the error cannot know, so it says the instance may exist
    and which tags `amdfleet cloud orphans` finds it by. A 429 is answered before
    anything is done, so spent 429s say only what the cloud said."""
    with _cloud(name) as cloud:
        if name == "digitalocean":
            cloud.server.fail(500, times=RETRY.attempts, method="POST", path="/v2/droplets")
        else:
            cloud.server.fail(RETRY.attempts, method="POST")
        with pytest.raises(CloudAPIError) as caught:
            cloud.client.create(cloud.request)
        message = str(caught.value)
        assert caught.value.status == 500
        assert f"{name} may have created 'lost-node0' all the same" in message
        assert "amdfleet-project-demo, amdfleet-stack-prod, amdfleet-node-node0" in message
        assert f"`amdfleet cloud orphans --provider {name}` finds it" in message
        # each lost answer: a backoff, then a look for the instance
        assert cloud.waits == [1.0, 2.0, 4.0] and cloud.created() == []

        if name == "digitalocean":
            cloud.server.fail(429, times=RETRY.attempts, retry_after="1", method="POST")
        else:
            cloud.server.rate_limit(1, times=RETRY.attempts, method="POST")
        with pytest.raises(CloudAPIError) as limited:
            cloud.client.create(cloud.request)
        assert limited.value.status == 429
        assert limited.value.operation.startswith("create")
        assert "may have created" not in str(limited.value)
        assert cloud.created() == []


def test_hot_aisle_adopts_a_vm_listed_only_after_a_later_look() -> None:
    """The provision POST timed out while Hot Aisle was still provisioning: the VM shows
    up in the team's list only later. The create looks again after each backoff and
    adopts it once listed (here the server lists it during the second wait)."""
    offers = [offer(1, "MI300X", cpu_cores=13, ram_gib=224, disk_gib=12288, price_cents=199)]
    with HotAisleServer(TOKEN, TEAM, offers) as server:
        waits: list[float] = []

        def wait(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:  # the cloud finishes the provisioning it was asked for
                httpx.post(
                    f"{server.url}/teams/{TEAM}/virtual_machines/",
                    json=dict(offers[0]["Specs"]),
                    headers={"Authorization": f"Token {TOKEN}"},
                )

        server.fail("provision")
        request = _request("demo", "1x-mi300x-13c-224g-12288g", REGION, "", "")
        with HotAisleClient(TOKEN, TEAM, base_url=server.url, retry=RETRY, sleep=wait) as client:
            made = client.create(request)
            assert (made.id, made.name, waits) == ("vm-01", "lost-node0", [1.0, 2.0])
            assert server.created == ["vm-01"]
            client.delete(made.id)
        assert server.leaked() == []


class _SignallingHotAisle(HotAisleServer):
    """The local Hot Aisle server, which also signals each VM it provisions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.provisions: list[threading.Event] = [threading.Event(), threading.Event()]
        super().__init__(*args, **kwargs)

    def _provision(self, body: Any) -> http.Answer:
        answer = super()._provision(body)
        done = next((e for e in self.provisions if not e.is_set()), None)
        if done is not None:
            done.set()
        return answer


def test_hot_aisle_creates_in_one_process_never_take_each_others_vm() -> None:
    """Two nodes created at once (Pulumi runs a provider's creates in threads), every
    provision answered 500 after the commit. One VM per team is provisioned at a time,
    so while the first create looks for its VM the second has not provisioned: each
    adopts its own. The first create's wait gives the second up to 2 s to provision in
    between, which only a missing lock would let it do."""
    offers = [offer(1, "MI300X", cpu_cores=13, ram_gib=224, disk_gib=12288, price_cents=199)]
    with _SignallingHotAisle(TOKEN, TEAM, offers) as server:
        server.after_create = "500"
        made: dict[str, Instance] = {}
        errors: list[BaseException] = []

        def wait(seconds: float) -> None:
            del seconds
            if threading.current_thread().name == "first":
                server.provisions[1].wait(timeout=2)

        def create(node: str) -> None:
            request = replace(
                _request("demo", "1x-mi300x-13c-224g-12288g", REGION, "", ""),
                name=f"lost-{node}",
                tags=instance_tags("demo", "prod", node),
            )
            try:
                with HotAisleClient(TOKEN, TEAM, base_url=server.url, sleep=wait) as client:
                    made[node] = client.create(request)
            except BaseException as e:
                errors.append(e)

        first = threading.Thread(target=create, args=("node0",), name="first")
        first.start()
        assert server.provisions[0].wait(timeout=30)  # the first has provisioned
        second = threading.Thread(target=create, args=("node1",), name="second")
        second.start()
        first.join(timeout=60)
        second.join(timeout=60)
        assert errors == []
        assert {node: i.name for node, i in made.items()} == {
            "node0": "lost-node0",
            "node1": "lost-node1",
        }
        assert sorted(i.id for i in made.values()) == server.created == ["vm-01", "vm-02"]
        for name in server.created:
            assert server.details(name)["description"].startswith(("lost-node0", "lost-node1"))
        with HotAisleClient(TOKEN, TEAM, base_url=server.url) as client:
            for name in server.created:
                client.delete(name)
        assert server.leaked() == []
