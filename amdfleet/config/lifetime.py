"""The ``campaign`` section: a stack's lifetime and teardown policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from amdfleet.config.base import SpecModel


class LifetimeSpec(SpecModel):
    """A stack's lifetime and teardown policy (the `campaign:` section; not a campaign file,
    which is :class:`amdfleet.campaign.spec.CampaignSpec`)."""

    ttl_hours: float | None = Field(
        None,
        gt=0,
        description="Planned lifetime from the engine's start; the `campaign` stack output "
        "carries the resulting `expires_at`.",
    )
    on_expiry: Literal["warn", "destroy"] = Field(
        "warn",
        description="What should happen past `expires_at`: 'warn' or 'destroy'. Recorded in "
        "the `campaign` output; `amdfleet reap` (run from cron or a systemd timer, see "
        "docs/reap.md) acts on it. Nothing destroys a stack unless reap is scheduled.",
    )
    keep_weights: bool = Field(
        False,
        description="Keep the staged weights on destroy (faster next campaign); by "
        "default destroy leaves nothing on the hosts.",
    )
    owner: str | None = Field(None, description="Who to ask before destroying.")
