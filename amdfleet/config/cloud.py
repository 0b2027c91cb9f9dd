"""``fleet.cloud``: instances rented through a cloud provider's API."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from amdfleet.config.base import CONFIG_KEY_RE, SpecModel


class CloudFleetSpec(SpecModel):
    """Instances rented through a cloud provider's API, one per node.

    amdfleet creates them on ``pulumi up`` (tagged with project, stack and node), pins
    each one's SSH host key before the first connection (it generates the key and
    injects it through cloud-init user-data), and deletes them on ``pulumi destroy``.
    """

    provider: Literal["digitalocean", "vultr", "hotaisle"] = Field(
        description="Cloud whose API creates the instances."
    )
    region: str = Field(min_length=1, description="Provider region or datacenter slug.")
    plan: str = Field(
        min_length=1,
        description="Provider size / plan slug (e.g. gpu-mi300x8-1536gb); checked against "
        "the topology with the size table in amdfleet's catalog.",
    )
    count: int = Field(1, ge=1, le=64, description="Number of instances (one per node).")
    ssh_key_path: str = Field(
        description="Private key amdfleet connects with; its public half is installed on "
        "the instances through user-data (or the cloud's SSH-key API). Read at deploy time, "
        "never stored."
    )
    api_token_secret: str = Field(
        pattern=CONFIG_KEY_RE,
        description="Name of the secret config key holding the provider API token.",
    )
    image: str | None = Field(
        None,
        description="Provider image (DigitalOcean image slug, Vultr image id); default: the "
        "catalog's ROCm image for the cloud.",
    )
    user: str | None = Field(
        None,
        description="SSH user of the cloud image; default: the catalog's for the cloud "
        "(root on DigitalOcean and Vultr, hotaisle on Hot Aisle).",
    )
    team: str | None = Field(
        None, description="Hot Aisle team handle the VMs belong to (Hot Aisle only)."
    )
    api_url: str | None = Field(
        None,
        description="Base URL of the provider API, for a proxy or a test server; default: "
        "the provider's public endpoint. https, or http on a loopback address only.",
    )
    trust_first_use: bool = Field(
        False,
        description="Clouds that take no user-data (Hot Aisle) cannot have amdfleet's host "
        "key injected: set true to accept and pin the key the instance shows on its first "
        "connection. Never the default.",
    )
    boot_timeout_s: float | None = Field(
        None,
        gt=0,
        description="How long an instance may take to reach running and answer SSH; "
        "default: the catalog's per cloud (bare metal boots slower than VMs).",
    )
    max_hourly_usd: float | None = Field(
        None, gt=0, description="Refuse a fleet whose price per hour is above this."
    )
    max_total_usd: float | None = Field(
        None,
        gt=0,
        description="Refuse a fleet whose price over campaign.ttl_hours is above this "
        "(needs campaign.ttl_hours).",
    )

    @field_validator("api_url")
    @classmethod
    def _api_url_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        host = parts.hostname or ""
        loopback = host == "localhost" or host.startswith("127.") or host == "::1"
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return value.rstrip("/")
        raise ValueError(
            f"api_url must be https:// (or http:// on a loopback address), got {value!r} — "
            "the API token travels in its requests"
        )
