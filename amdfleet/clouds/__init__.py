"""Cloud APIs that rent AMD Instinct GPUs: one thin httpx client per cloud, behind
:class:`amdfleet.clouds.api.CloudAPI`; :func:`client_for` builds the one a stack names."""

from __future__ import annotations

from amdfleet.clouds.api import CloudAPI
from amdfleet.clouds.digitalocean import BASE_URL as DO_URL
from amdfleet.clouds.digitalocean import DigitalOceanClient
from amdfleet.clouds.hotaisle import BASE_URL as HOTAISLE_URL
from amdfleet.clouds.hotaisle import HotAisleClient
from amdfleet.clouds.vultr import API_URL as VULTR_URL
from amdfleet.clouds.vultr import VultrAPI
from amdfleet.errors import ConfigError
from amdfleet.findings import config_issue

PROVIDERS = ("digitalocean", "vultr", "hotaisle")
CloudAPIClient = DigitalOceanClient | VultrAPI | HotAisleClient
"""A client :func:`client_for` returns: a :class:`CloudAPI` that is also a context
manager (``close()``)."""


def client_for(
    provider: str, token: str, *, api_url: str | None, team: str | None
) -> CloudAPIClient:
    """The client of ``provider`` (``digitalocean``, ``vultr`` or ``hotaisle``) with
    ``token``, at ``api_url`` (None: the cloud's own API). Hot Aisle needs ``team``.
    Close it when done (it is a context manager). Raises ConfigError for an unknown
    provider or a missing team, naming the field."""
    if provider == "digitalocean":
        return DigitalOceanClient(token, base_url=api_url or DO_URL)
    if provider == "vultr":
        return VultrAPI(token, base_url=api_url or VULTR_URL)
    if provider == "hotaisle":
        if not team:
            raise ConfigError(
                [config_issue("team", "Hot Aisle needs the team handle", "set fleet.cloud.team")]
            )
        return HotAisleClient(token, team, base_url=api_url or HOTAISLE_URL)
    raise ConfigError(
        [config_issue("provider", f"unknown cloud {provider!r}", f"one of {', '.join(PROVIDERS)}")]
    )


__all__ = ["PROVIDERS", "CloudAPI", "CloudAPIClient", "client_for"]
