"""Clouds amdfleet rents AMD Instinct instances from: their defaults and GPU sizes.

Pure data and lookups, for the planner (which checks a stack's ``fleet.cloud`` against
them and prices the fleet) and for the cloud providers (their default image, user,
boot deadline). Every size records in ``source`` where its slug, regions and price were
seen. Prices change: they are what the planner puts in front of cost ceilings, not a
quote. Where a provider publishes no price, the figure is a conservative (high)
estimate, flagged "NOT PUBLIC" in ``source``, so a ceiling errs on refusing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Provider = Literal["digitalocean", "vultr", "hotaisle"]


@dataclass(frozen=True)
class CloudSize:
    """One rentable instance type: its GPUs, hourly price (per instance) and regions."""

    provider: str
    slug: str
    accelerator: str
    """Catalog accelerator id (``amdfleet.catalog.gpus``): mi300x, mi325x or mi355x."""
    gpus: int
    price_hourly_usd: float
    regions: tuple[str, ...]
    kind: Literal["vm", "bare-metal"]
    source: str
    """Where the slug, regions and price were seen (page and date), and what is estimated."""


@dataclass(frozen=True)
class CloudDefaults:
    """What a stack gets when its ``fleet.cloud`` leaves a field out."""

    provider: str
    title: str
    api_url: str
    """The public API base; the same as the client's default in ``amdfleet.clouds``."""
    image: str | None
    """The default ROCm-capable image; None where the cloud boots its own (Hot Aisle)."""
    user: str
    boot_timeout_s: float
    user_data: bool
    """Whether the cloud takes inline user-data, through which amdfleet injects the
    instance's SSH host key (without it the key can only be trusted on first use)."""


CLOUDS: dict[str, CloudDefaults] = {
    c.provider: c
    for c in (
        CloudDefaults(
            provider="digitalocean",
            title="DigitalOcean",
            api_url="https://api.digitalocean.com",
            # DigitalOcean's AMD GPU base image (ROCm and Docker preinstalled), listed among
            # the public image slugs next to gpu-h100x1-base (alchemy-run/alchemy
            # packages/digitalocean/src/Slugs.ts, DigitalOcean's slugs of October 2026).
            image="gpu-amd-base",
            user="root",
            # A GPU droplet is a VM: a few minutes to active, then cloud-init; 20 min leaves
            # room for a slow first boot of an 8-GPU droplet (GPU VFs attach before boot).
            boot_timeout_s=1200.0,
            user_data=True,
        ),
        CloudDefaults(
            provider="vultr",
            title="Vultr",
            api_url="https://api.vultr.com",
            # os_id of "Ubuntu 24.04 LTS x64" in Vultr's GET /v2/os (an all-digit image is
            # an os_id: amdfleet.clouds.vultr.create_body). Vultr's AMD GPU bare metal
            # ships ROCm drivers with its Ubuntu images; not verified here (no network):
            # check `GET /v2/os` and set fleet.cloud.image if it differs.
            image="2284",
            user="root",
            # Bare metal installs the OS on the physical machine: POST, firmware, a full
            # image write and a reboot; 20-40 min is common for 8-GPU servers, so 60 min.
            boot_timeout_s=3600.0,
            user_data=True,
        ),
        CloudDefaults(
            provider="hotaisle",
            title="Hot Aisle",
            api_url="https://admin.hotaisle.app/api",
            image=None,  # Hot Aisle boots its own image (amdfleet.clouds.hotaisle)
            user="hotaisle",
            # Provisioning blocks until the VM exists (up to 15 min: the client's read
            # timeout); the VM then boots and starts sshd. 30 min covers both.
            boot_timeout_s=1800.0,
            user_data=False,
        ),
    )
}

_DO_PRICING = "docs.digitalocean.com/products/droplets/details/pricing (validated 28 May 2026)"
_DO_SERVER = "tests/support/clouds/digitalocean_server.py (slugs DigitalOcean lists publicly)"
_VULTR_PLANS = (
    "plan id: dstack's gpuhunt Vultr catalog (BARE_METAL_GPU_DETAILS) and "
    "tests/support/clouds/vultr_server.py GPU_PLANS; price: hourly_cost a third-party "
    "Vultr CLI's tests record (the same table), seen 2026-11-28"
)
_HOTAISLE = (
    "slug: amdfleet.clouds.hotaisle.size_slug of the VM type (13 Xeon cores per GPU as "
    "dstack's Hot Aisle backend lists, RAM/disk as tests/unit/test_cloud_hotaisle.py "
    "offers; confirm with GET /teams/{team}/virtual_machines/available/); region: the one "
    "Hot Aisle location (amdfleet.clouds.hotaisle.REGION); price: $1.99 per GPU-hour, "
    "Hot Aisle's on-demand MI300X rate as public price surveys list it (seen 2026-11-28)"
)

SIZES: tuple[CloudSize, ...] = (
    # A CPU droplet: no GPU, for trying a stack on the CPU engine (topology.accelerator
    # cpu, gpus_per_node 1: one CPU "device", as the catalog counts a CPU host).
    CloudSize(
        provider="digitalocean",
        slug="s-4vcpu-8gb",
        accelerator="cpu",
        gpus=1,
        price_hourly_usd=0.07143,
        regions=("ams3", "fra1", "lon1", "nyc1", "nyc3", "sfo3", "sgp1", "tor1"),
        kind="vm",
        source=f"{_DO_PRICING}: Basic droplet 8 GiB / 4 vCPU, $48 per month = $0.07143 "
        "per hour (672 billable hours a month); regions: the Basic droplet regions, "
        "verify with GET /v2/sizes",
    ),
    CloudSize(
        provider="digitalocean",
        slug="gpu-mi300x1-192gb",
        accelerator="mi300x",
        gpus=1,
        price_hourly_usd=1.99,
        regions=("atl1", "nyc2", "tor1"),
        kind="vm",
        source=f"slug: {_DO_SERVER}, seen on a real droplet in atl1; price: {_DO_PRICING} "
        "'AMD MI300X $1.99 per hour'; regions: DigitalOcean's GPU droplet regions, verify "
        "with GET /v2/sizes",
    ),
    CloudSize(
        provider="digitalocean",
        slug="gpu-mi300x8-1536gb",
        accelerator="mi300x",
        gpus=8,
        price_hourly_usd=15.92,
        regions=("atl1", "nyc2", "tor1"),
        kind="vm",
        source=f"slug: {_DO_SERVER}; price: {_DO_PRICING} 'AMD MI300X (8x) $15.92 per hour'; "
        "regions: DigitalOcean's GPU droplet regions, verify with GET /v2/sizes",
    ),
    CloudSize(
        provider="digitalocean",
        slug="gpu-mi325x8-2048gb",
        accelerator="mi325x",
        gpus=8,
        price_hourly_usd=31.92,
        regions=("atl1", "nyc2"),
        kind="vm",
        source=f"slug: {_DO_SERVER}; price NOT PUBLIC ({_DO_PRICING}: 'per contract after "
        "contacting sales'): $3.99 per GPU-hour assumed, above every public MI325X rate "
        "seen, so a cost ceiling errs on refusing; regions: verify with GET /v2/sizes",
    ),
    CloudSize(
        provider="digitalocean",
        slug="gpu-mi355x8-2304gb-spot",
        accelerator="mi355x",
        gpus=8,
        price_hourly_usd=31.92,
        regions=("mem1",),
        kind="vm",
        source=f"slug and region: {_DO_SERVER} (DigitalOcean's MI350-series size, spot); "
        f"price NOT PUBLIC ({_DO_PRICING}: MI350X 'per contract'): $3.99 per GPU-hour "
        "assumed (conservative); DigitalOcean lists no on-demand MI355X slug publicly",
    ),
    CloudSize(
        provider="vultr",
        slug="vbm-256c-2048gb-8-mi300x-gpu",
        accelerator="mi300x",
        gpus=8,
        price_hourly_usd=31.92,
        regions=("ord", "sea"),
        kind="bare-metal",
        source=f"{_VULTR_PLANS}; regions as the same table lists them",
    ),
    CloudSize(
        provider="vultr",
        slug="vbm-256c-3072gb-8-mi325x-gpu",
        accelerator="mi325x",
        gpus=8,
        price_hourly_usd=36.92,
        regions=("ord",),
        kind="bare-metal",
        source=f"{_VULTR_PLANS}; regions as the same table lists them",
    ),
    CloudSize(
        provider="vultr",
        slug="vbm-256c-3072gb-8-mi355x-gpu",
        accelerator="mi355x",
        gpus=8,
        price_hourly_usd=20.72,
        regions=("ord",),
        kind="bare-metal",
        source=f"{_VULTR_PLANS}; region: a public price survey found the plan with no "
        "location; Chicago (ord) is where Vultr's AMD GPU plans are listed — an "
        "assumption, verify with GET /v2/plans-metal",
    ),
    CloudSize(
        provider="hotaisle",
        slug="1x-mi300x-13c-224g-12288g",
        accelerator="mi300x",
        gpus=1,
        price_hourly_usd=1.99,
        regions=("us-michigan-1",),
        kind="vm",
        source=_HOTAISLE,
    ),
    CloudSize(
        provider="hotaisle",
        slug="8x-mi300x-104c-1792g-12288g",
        accelerator="mi300x",
        gpus=8,
        price_hourly_usd=15.92,
        regions=("us-michigan-1",),
        kind="vm",
        source=_HOTAISLE + "; 8 GPUs x $1.99",
    ),
)


def cloud(provider: str) -> CloudDefaults:
    """The defaults of ``provider``; raises ``KeyError`` if amdfleet has no such cloud."""
    return CLOUDS[provider]


def cloud_sizes(provider: str) -> tuple[CloudSize, ...]:
    """Every AMD GPU size the catalog knows for ``provider`` (empty for an unknown one)."""
    return tuple(s for s in SIZES if s.provider == provider)


def cloud_size(provider: str, slug: str) -> CloudSize | None:
    """The size ``slug`` of ``provider``, or None if the catalog does not list it."""
    return next((s for s in cloud_sizes(provider) if s.slug == slug), None)
