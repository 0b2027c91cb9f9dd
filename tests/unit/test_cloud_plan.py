"""Cloud fleets in the planner: the committed cloud stacks plan, with their cost worked out
here by hand from the catalog entry; the catalog's sizes agree with what the local cloud
API servers serve (through the real clients); ``amdfleet plan`` prints the cost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amdfleet import catalog
from amdfleet.clouds.api import SizeOffer
from amdfleet.clouds.digitalocean import DigitalOceanClient
from amdfleet.clouds.hotaisle import HotAisleClient
from amdfleet.clouds.vultr import VultrAPI
from amdfleet.config import load_stack_file
from amdfleet.errors import PlanError
from amdfleet.plan import plan
from tests.support.clouds.digitalocean_server import DigitalOceanServer
from tests.support.clouds.hotaisle_server import HotAisleServer, offer
from tests.support.clouds.vultr_server import VultrServer

AMDFLEET = shutil.which("amdfleet", path=str(Path(sys.executable).parent)) or "amdfleet"
STACKS = Path(__file__).resolve().parents[2] / "stacks"
TOKEN = "test-token-cloud-plan-9c1e"

# Each committed cloud stack: provider, size, region, count, TTL (hours) and the price per
# instance-hour its catalog entry records, read off amdfleet/catalog/clouds.py.
CLOUD_STACKS = {
    "do-mi300x-llama70b": ("digitalocean", "gpu-mi300x8-1536gb", "atl1", 1, 12, 15.92),
    "vultr-mi355x-llama70b": ("vultr", "vbm-256c-3072gb-8-mi355x-gpu", "ord", 1, 12, 20.72),
    "hotaisle-mi300x-llama405b": (
        "hotaisle",
        "8x-mi300x-104c-1792g-12288g",
        "us-michigan-1",
        1,
        24,
        15.92,
    ),
}
EXPECTED_COST = {  # fleet per hour, and over the TTL, worked out by hand
    "do-mi300x-llama70b": (15.92, 191.04),  # 15.92 x 12
    "vultr-mi355x-llama70b": (20.72, 248.64),  # 20.72 x 12
    "hotaisle-mi300x-llama405b": (15.92, 382.08),  # 8 GPUs x $1.99 = 15.92, x 24
}


@pytest.mark.parametrize("name", sorted(CLOUD_STACKS))
def test_committed_cloud_stack_plans_with_its_cost(name: str) -> None:
    provider, size, region, count, ttl, price = CLOUD_STACKS[name]
    spec = load_stack_file(name).spec
    cloud = plan(spec).cloud

    assert cloud is not None
    assert (cloud.provider, cloud.size, cloud.region, cloud.count) == (
        provider,
        size,
        region,
        count,
    )
    assert cloud.price_hourly_usd == price
    hourly, total = EXPECTED_COST[name]
    assert cloud.fleet_hourly_usd == pytest.approx(hourly)
    assert (cloud.ttl_hours, cloud.campaign_usd) == (ttl, pytest.approx(total))
    assert cloud.max_hourly_usd is not None and cloud.max_hourly_usd >= hourly
    assert cloud.max_total_usd is not None and cloud.max_total_usd >= total
    assert cloud.token_secret == spec.fleet.cloud.api_token_secret  # type: ignore[union-attr]
    assert cloud.size_source == catalog.cloud_size(provider, size).source  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "api_url", "image", "user", "boot_timeout_s"),
    [
        ("do-mi300x-llama70b", "https://api.digitalocean.com", "gpu-amd-base", "root", 1200),
        ("vultr-mi355x-llama70b", "https://api.vultr.com", "2284", "root", 3600),
        ("hotaisle-mi300x-llama405b", "https://admin.hotaisle.app/api", None, "hotaisle", 1800),
    ],
)
def test_cloud_defaults_fill_what_the_stack_leaves_out(
    name: str, api_url: str, image: str | None, user: str, boot_timeout_s: float
) -> None:
    cloud = plan(load_stack_file(name).spec).cloud
    assert cloud is not None
    assert (cloud.api_url, cloud.image, cloud.user, cloud.boot_timeout_s) == (
        api_url,
        image,
        user,
        boot_timeout_s,
    )


def test_the_catalog_api_urls_are_the_clients_defaults() -> None:
    from amdfleet.clouds import digitalocean, hotaisle, vultr

    assert catalog.cloud("digitalocean").api_url == digitalocean.BASE_URL
    assert catalog.cloud("vultr").api_url == vultr.API_URL
    assert catalog.cloud("hotaisle").api_url == hotaisle.BASE_URL
    assert catalog.cloud_size("hotaisle", "8x-mi300x-104c-1792g-12288g").regions == (  # type: ignore[union-attr]
        hotaisle.REGION,
    )


def test_stack_values_win_over_catalog_defaults(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        "do-mi300x-llama70b",
        image="ubuntu-24-04-x64",
        user="ubuntu",
        boot_timeout_s=600,
        api_url="http://127.0.0.1:8080",
        count=2,
        max_hourly_usd=40,
        max_total_usd=400,
    )
    document = yaml.safe_load(path.read_text())
    document["config"]["amdfleet:topology"]["nodes"] = 2
    document["config"]["amdfleet:parallelism"]["pp"] = 2
    path.write_text(yaml.safe_dump(document))

    deployment = plan(load_stack_file(str(path)).spec)

    cloud = deployment.cloud
    assert cloud is not None
    assert (cloud.image, cloud.user, cloud.boot_timeout_s) == ("ubuntu-24-04-x64", "ubuntu", 600)
    assert cloud.api_url == "http://127.0.0.1:8080"
    assert (cloud.fleet_hourly_usd, cloud.campaign_usd) == (31.84, 382.08)  # 2 x 15.92, x 12
    assert [n.name for n in deployment.nodes] == [f"{path.stem[7:]}-0", f"{path.stem[7:]}-1"]


def test_a_stack_without_ttl_plans_with_unbounded_cost(tmp_path: Path) -> None:
    path = _edited(tmp_path, "do-mi300x-llama70b", max_total_usd=None)
    document = yaml.safe_load(path.read_text())
    del document["config"]["amdfleet:campaign"]
    path.write_text(yaml.safe_dump(document))

    cloud = plan(load_stack_file(str(path)).spec).cloud

    assert cloud is not None
    assert (cloud.ttl_hours, cloud.campaign_usd, cloud.fleet_hourly_usd) == (None, None, 15.92)


def test_a_ceiling_exactly_at_the_price_passes_and_a_cent_below_refuses(tmp_path: Path) -> None:
    at = _edited(tmp_path, "do-mi300x-llama70b", max_hourly_usd=15.92, max_total_usd=191.04)
    assert plan(load_stack_file(str(at)).spec).cloud is not None
    below = _edited(tmp_path, "do-mi300x-llama70b", max_hourly_usd=15.91, max_total_usd=191.03)
    with pytest.raises(PlanError) as caught:
        plan(load_stack_file(str(below)).spec)
    assert set(caught.value.paths) == {"fleet.cloud.max_hourly_usd", "fleet.cloud.max_total_usd"}
    assert "$15.92/h" in str(caught.value) and "$191.04" in str(caught.value)


# --- the catalog against the local API servers (what they serve, through our clients) ---


def _overlap(provider: str, offers: list[SizeOffer]) -> list[tuple[str, str | None, int]]:
    known = {s.slug for s in catalog.cloud_sizes(provider)}
    return sorted((o.slug, o.gpu_model, o.gpu_count) for o in offers if o.slug in known)


def _catalog(provider: str, slugs: set[str]) -> list[tuple[str, str | None, int]]:
    """The catalog's sizes as a client reports them: a CPU size (which the catalog counts
    as one ``cpu`` device, the way a CPU stack's topology does) has no GPU model and no
    GPUs in the API."""
    return sorted(
        (s.slug, None, 0) if s.accelerator == "cpu" else (s.slug, s.accelerator, s.gpus)
        for s in catalog.cloud_sizes(provider)
        if s.slug in slugs
    )


def test_digitalocean_sizes_agree_with_the_catalog() -> None:
    with (
        DigitalOceanServer.start(TOKEN) as server,
        DigitalOceanClient(TOKEN, base_url=server.url) as client,
    ):
        served = _overlap("digitalocean", client.sizes())
    # the server serves every size the catalog lists for DigitalOcean
    assert {s for s, _, _ in served} == {s.slug for s in catalog.cloud_sizes("digitalocean")}
    assert served == _catalog("digitalocean", {s for s, _, _ in served})


def test_vultr_plans_agree_with_the_catalog() -> None:
    with VultrServer(TOKEN) as server, VultrAPI(TOKEN, base_url=server.url) as client:
        served = _overlap("vultr", client.sizes())
    assert {s for s, _, _ in served} == {s.slug for s in catalog.cloud_sizes("vultr")}
    assert served == _catalog("vultr", {s for s, _, _ in served})


def test_hotaisle_vm_types_agree_with_the_catalog() -> None:
    offers = [
        offer(1, "MI300X", cpu_cores=13, ram_gib=224, disk_gib=12288, price_cents=199),
        offer(8, "MI300X", cpu_cores=104, ram_gib=1792, disk_gib=12288, price_cents=1592),
    ]
    with (
        HotAisleServer(TOKEN, "team-a", offers) as server,
        HotAisleClient(TOKEN, "team-a", base_url=server.url) as client,
    ):
        served = _overlap("hotaisle", client.sizes())
    assert {s for s, _, _ in served} == {s.slug for s in catalog.cloud_sizes("hotaisle")}
    assert served == _catalog("hotaisle", {s for s, _, _ in served})


# --- amdfleet plan, the real console script ------------------------------------------------


def test_plan_prints_the_cloud_section_with_cost() -> None:
    result = _run("plan", "hotaisle-mi300x-llama405b")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    section = out[out.index("\ncloud\n") : out.index("\nmemory per GPU")]
    assert "Hot Aisle (https://admin.hotaisle.app/api)" in section
    assert "8x-mi300x-104c-1792g-12288g: 8 × AMD Instinct MI300X per instance" in section
    assert "1 instance(s)" in section
    assert "$15.92 per instance-hour" in section
    assert "$15.92 per hour" in section
    assert "$382.08 over campaign.ttl_hours 24 h" in section
    assert "max_hourly_usd $20.00, max_total_usd $400.00" in section
    assert "trusted on first use" in section
    assert "hotaisleToken: NOT SET" in out  # the token's key is named, as other secrets are


def test_plan_without_ttl_says_the_cost_is_unbounded(tmp_path: Path) -> None:
    path = _edited(tmp_path, "vultr-mi355x-llama70b", max_total_usd=None)
    document = yaml.safe_load(path.read_text())
    del document["config"]["amdfleet:campaign"]
    path.write_text(yaml.safe_dump(document))

    result = _run("plan", str(path))

    assert result.returncode == 0, result.stderr
    assert "no campaign.ttl_hours: cost unbounded — set one" in result.stdout
    assert "max_hourly_usd $25.00" in result.stdout


def test_plan_json_carries_the_cloud_plan() -> None:
    result = _run("plan", "vultr-mi355x-llama70b", "--json")
    assert result.returncode == 0, result.stderr
    cloud = json.loads(result.stdout)["cloud"]
    assert cloud["size"] == "vbm-256c-3072gb-8-mi355x-gpu"
    assert (cloud["fleet_hourly_usd"], cloud["campaign_usd"]) == (20.72, 248.64)
    assert cloud["token_secret"] == "vultrToken"


def test_plan_of_a_host_stack_has_no_cloud_section() -> None:
    result = _run("plan", "mi355x-llama70b")
    assert result.returncode == 0, result.stderr
    assert "\ncloud\n" not in result.stdout
    assert "instance-hour" not in result.stdout


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMDFLEET, *args], capture_output=True, text=True, timeout=60)


def _edited(tmp_path: Path, stack: str, **cloud: object) -> Path:
    """A copy of a committed stack with fleet.cloud fields set (None removes one)."""
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    fields = document["config"]["amdfleet:fleet"]["cloud"]
    for key, value in cloud.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    path = tmp_path / f"Pulumi.{stack}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path
