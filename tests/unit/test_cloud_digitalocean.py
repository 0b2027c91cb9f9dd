"""The DigitalOcean client against a real local HTTP server implementing the documented
droplet and size endpoints (tests/support/clouds/digitalocean_server.py: bodies from
DigitalOcean's OpenAPI examples in ../shared/fixtures/cloud-apis/digitalocean; the AMD
sizes are built in the documented shape, as the spec has none). No request reaches
DigitalOcean; retries' waits are recorded, not slept. Every test ends with the server's
ledger balanced: each droplet created was deleted."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from amdfleet.clouds.api import (
    CapacityError,
    CreateRequest,
    InstanceState,
    RetryPolicy,
    SizeOffer,
    UnknownSizeError,
    instance_tags,
)
from amdfleet.clouds.digitalocean import DigitalOceanClient, DropletRequestError
from amdfleet.errors import CloudAPIError
from tests.support.clouds.digitalocean_server import DigitalOceanServer

TOKEN = "test-token-do-5f1c0a9e7b3d"
RETRY = RetryPolicy(attempts=4, base_s=0.5, max_s=30.0)
TAGS = instance_tags("demo", "prod", "node0")
USER_DATA = "#cloud-config\nssh_keys:\n  ed25519_private: |\n    (host key)\n"


class Sleeps(list[float]):
    """Stands in for time.sleep: records each wait asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[DigitalOceanServer]:
    with DigitalOceanServer.start(TOKEN) as api:
        yield api
        assert api.leaked() == [], "droplets left behind"
        assert sorted(api.created) == sorted(api.deleted + api.vanished)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(server: DigitalOceanServer, sleeps: Sleeps) -> Iterator[DigitalOceanClient]:
    with DigitalOceanClient(TOKEN, base_url=server.url, retry=RETRY, sleep=sleeps) as do:
        yield do


def request(
    name: str = "prod-node0", size: str = "gpu-mi300x8-1536gb", region: str = "atl1", **kw: object
) -> CreateRequest:
    fields: dict[str, object] = {
        "name": name,
        "region": region,
        "size": size,
        "image": "gpu-amd-base",
        "tags": TAGS,
        "user_data": USER_DATA,
        "ssh_key_ids": ("289794", "3b:16:e4:bf:8b:00:8b:b8:59:8c:a9:d3:f0:19:fa:45"),
    }
    return CreateRequest(**{**fields, **kw})  # type: ignore[arg-type]


def test_create_then_poll_until_running_then_delete_twice(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    made = client.create(request())
    assert (made.state, made.status, made.public_address) == (InstanceState.PENDING, "new", None)
    assert (made.name, made.region, made.size, made.tags) == (
        "prod-node0",
        "atl1",
        "gpu-mi300x8-1536gb",
        TAGS,
    )
    sent = server.requests("POST", "/v2/droplets")[0]
    assert sent.authorization == f"Bearer {TOKEN}"
    assert sent.body == {
        "name": "prod-node0",
        "region": "atl1",
        "size": "gpu-mi300x8-1536gb",
        "image": "gpu-amd-base",
        "ssh_keys": [289794, "3b:16:e4:bf:8b:00:8b:b8:59:8c:a9:d3:f0:19:fa:45"],
        "tags": list(TAGS),
        "user_data": USER_DATA,
    }

    polls = [client.get(made.id) for _ in range(server.polls_to_active + 1)]
    assert [p.state if p else None for p in polls] == [
        InstanceState.PENDING,
        InstanceState.PENDING,
        InstanceState.RUNNING,
    ]
    running = polls[-1]
    assert running is not None and running.status == "active"
    assert running.public_address and running.public_address.startswith("203.0.113.")
    assert running.private_address and running.private_address.startswith("10.128.0.")

    client.delete(made.id)
    assert client.get(made.id) is None
    client.delete(made.id)  # already gone: fine
    assert server.deleted == [int(made.id)]


def test_list_tagged_reads_every_page(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    server.max_per_page = 2
    for n in range(5):
        client.create(request(name=f"prod-node{n}"))
    other = client.create(request(name="dev-node0", tags=instance_tags("demo", "dev", "node0")))

    before = len(server.requests("GET", "/v2/droplets"))  # each create looks first
    found = client.list_tagged("amdfleet-stack-prod")

    assert sorted(i.name for i in found) == [f"prod-node{n}" for n in range(5)]
    pages = server.requests("GET", "/v2/droplets")[before:]
    # tag_name lists no GPU droplet here (the server's strict reading of the reference);
    # type=gpus lists all six, two a page
    assert [r.query for r in pages] == [
        {"tag_name": "amdfleet-stack-prod", "page": "1", "per_page": "200"},
        *({"type": "gpus", "page": str(p), "per_page": "200"} for p in (1, 2, 3)),
    ]
    for instance in [*found, other]:
        client.delete(instance.id)
    assert client.list_tagged("amdfleet") == []


def test_list_tagged_finds_gpu_and_cpu_droplets(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    """A plain droplet list has no GPU droplets (the reference says so): list_tagged finds
    a GPU droplet through type=gpus and a CPU one through tag_name, each once."""
    gpu = client.create(request(name="prod-node0"))
    cpu = client.create(request(name="prod-node1", size="s-4vcpu-8gb", region="nyc3"))
    found = client.list_tagged("amdfleet-stack-prod")
    assert sorted(i.id for i in found) == sorted([gpu.id, cpu.id])
    for made in (gpu, cpu):
        client.delete(made.id)


def test_sizes_map_amd_gpus_prices_and_regions(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    server.max_per_page = 4  # six sizes: two pages
    offers = {o.slug: o for o in client.sizes()}

    assert offers["gpu-mi300x1-192gb"] == SizeOffer(
        "gpu-mi300x1-192gb", "mi300x", 1, 1.99, ("atl1", "nyc2"), True
    )
    assert (offers["gpu-mi300x8-1536gb"].gpu_model, offers["gpu-mi300x8-1536gb"].gpu_count) == (
        "mi300x",
        8,
    )
    # gpu_info.model "AMD Instinct MI325X"; no gpu_info at all: the slug tells
    assert offers["gpu-mi325x8-2048gb"].gpu_model == "mi325x"
    assert (
        offers["gpu-mi355x8-2304gb-spot"].gpu_model,
        offers["gpu-mi355x8-2304gb-spot"].gpu_count,
    ) == ("mi355x", 8)
    # the spec's own examples, verbatim: an NVIDIA GPU size and a basic one
    assert offers["gpu-h100x1-80gb"] == SizeOffer("gpu-h100x1-80gb", None, 1, 6.74, ("tor1",), True)
    basic = offers["s-1vcpu-1gb"]
    assert (basic.gpu_model, basic.gpu_count, basic.price_hourly) == (None, 0, 0.00743999984115362)
    assert len(basic.regions) == 13
    assert len(server.requests("GET", "/v2/sizes")) == 2


def test_rate_limit_waits_what_retry_after_says(
    server: DigitalOceanServer, client: DigitalOceanClient, sleeps: Sleeps
) -> None:
    server.fail(429, times=2, retry_after="29", path="/v2/sizes")
    assert client.sizes()
    assert sleeps == [29.0, 29.0]
    assert len(server.requests("GET", "/v2/sizes")) == 3


def test_create_rate_limited_is_retried_without_duplicates(
    server: DigitalOceanServer, client: DigitalOceanClient, sleeps: Sleeps
) -> None:
    server.fail(429, retry_after="7", method="POST")
    made = client.create(request())
    assert sleeps == [7.0]
    assert server.created == [int(made.id)]
    # one look (tag_name, type=gpus) before the first POST; a 429 created nothing, so no
    # search after it
    assert len(server.requests("GET", "/v2/droplets")) == 2
    client.delete(made.id)


def test_server_error_then_success(
    server: DigitalOceanServer, client: DigitalOceanClient, sleeps: Sleeps
) -> None:
    made = client.create(request())
    server.fail(500, times=2, method="GET")
    assert client.get(made.id) is not None
    assert sleeps == [0.5, 1.0]
    client.delete(made.id)


def test_server_errors_exhaust_the_retries(
    server: DigitalOceanServer, client: DigitalOceanClient, sleeps: Sleeps
) -> None:
    server.fail(503, times=10, path="/v2/sizes")
    with pytest.raises(CloudAPIError) as caught:
        client.sizes()
    assert caught.value.status == 503
    assert "Unexpected server-side error" in str(caught.value)
    assert sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("answer", ["500", "drop"])
def test_create_that_failed_after_creating_adopts_the_droplet(
    server: DigitalOceanServer, client: DigitalOceanClient, answer: str
) -> None:
    """The server made the droplet, then answered 500 or dropped the connection: a
    blind retry of the POST would make a second one."""
    server.after_create = answer  # type: ignore[assignment]
    made = client.create(request())
    assert server.created == [int(made.id)]
    assert made.name == "prod-node0"
    client.delete(made.id)


def test_no_capacity_names_the_other_regions(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    server.no_capacity.add(("gpu-mi300x8-1536gb", "atl1"))
    with pytest.raises(CapacityError) as caught:
        client.create(request())
    assert caught.value.alternatives == ("nyc2", "tor1")
    assert caught.value.status == 422  # the cloud's own status and message
    message = str(caught.value)
    assert "no capacity in atl1 for gpu-mi300x8-1536gb: try nyc2, tor1" in message
    assert "Size is not available in this region." in message
    assert server.created == []


def test_size_not_listed_in_region_is_capacity_with_the_listed_ones(
    client: DigitalOceanClient,
) -> None:
    with pytest.raises(CapacityError) as caught:
        client.create(request(size="gpu-mi325x8-2048gb", region="atl1"))
    assert caught.value.alternatives == ("nyc2",)


def test_a_size_digitalocean_does_not_list_is_unknown_not_a_shortage(
    client: DigitalOceanClient,
) -> None:
    with pytest.raises(UnknownSizeError) as caught:
        client.create(request(size="gpu-nope8-1gb"))
    error = caught.value
    assert not isinstance(error, CapacityError)
    assert error.status == 422
    assert "s-1vcpu-1gb" in error.listed
    message = str(error)
    assert "unknown size 'gpu-nope8-1gb': digitalocean does not list it; it lists " in message
    assert "gpu-mi300x1-192gb, gpu-mi300x8-1536gb, gpu-mi325x8-2048gb" in message
    assert "(invalid size)" in message


def test_other_422_is_the_clouds_own_message(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    server.fail(422, method="POST")
    with pytest.raises(CloudAPIError) as caught:
        client.create(request())
    assert not isinstance(caught.value, CapacityError | UnknownSizeError)
    assert caught.value.status == 422
    assert server.created == []


def test_stuck_droplet_stays_pending(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    server.stuck = True
    made = client.create(request())
    for _ in range(server.polls_to_active + 5):
        polled = client.get(made.id)
        assert polled is not None
        assert (polled.state, polled.status, polled.public_address) == (
            InstanceState.PENDING,
            "new",
            None,
        )
    client.delete(made.id)


def test_droplet_deleted_out_of_band(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    made = client.create(request())
    server.vanish(int(made.id))
    assert client.get(made.id) is None
    client.delete(made.id)
    assert client.list_tagged(TAGS[-1]) == []
    assert server.deleted == []


def test_malformed_response(server: DigitalOceanServer, client: DigitalOceanClient) -> None:
    made = client.create(request())
    server.malform(method="GET")
    with pytest.raises(CloudAPIError, match="malformed response") as caught:
        client.get(made.id)
    assert caught.value.status == 200
    client.delete(made.id)


def test_wrong_token_reports_the_clouds_message_and_never_the_token(
    server: DigitalOceanServer, sleeps: Sleeps
) -> None:
    wrong = "test-token-wrong-93ab71"
    with DigitalOceanClient(wrong, base_url=server.url, retry=RETRY, sleep=sleeps) as do:
        with pytest.raises(CloudAPIError) as caught:
            do.sizes()
        assert wrong not in repr(do)
    assert caught.value.status == 401
    assert "Unable to authenticate you." in str(caught.value)
    assert wrong not in str(caught.value) and TOKEN not in str(caught.value)
    assert sleeps == []  # a 401 is not retried


def test_invalid_tags_and_name_are_refused_before_sending(
    server: DigitalOceanServer, client: DigitalOceanClient
) -> None:
    bad = request(name="prod node0", tags=(*TAGS, "team=ml"))
    with pytest.raises(DropletRequestError) as caught:
        client.create(bad)
    assert caught.value.paths == ("name", "tags[4]")
    assert "'team=ml'" in str(caught.value) and "':', '-' and '_'" in str(caught.value)
    with pytest.raises(DropletRequestError, match=re.escape("'../account' is not a droplet id")):
        client.get("../account")
    assert server.log == []


def test_empty_token_is_refused() -> None:
    with pytest.raises(CloudAPIError, match="token is empty"):
        DigitalOceanClient("  ")
