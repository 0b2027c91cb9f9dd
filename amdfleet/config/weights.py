"""The ``weights`` section: where and how the weights are staged."""

from __future__ import annotations

from pydantic import Field, field_validator

from amdfleet.config.base import CONFIG_KEY_RE, SpecModel


class WeightsSpec(SpecModel):
    """Where weights are staged on every node."""

    cache_dir: str = Field(
        "/var/cache/amdfleet/huggingface",
        description="Hugging Face cache directory, the same absolute path on every node; "
        "mounted into containers.",
    )
    container_dir: str = Field(
        "/root/.cache/huggingface",
        description="Where cache_dir is mounted inside the engine container (HF_HOME there).",
    )
    hf_token_secret: str | None = Field(
        None,
        pattern=CONFIG_KEY_RE,
        description="Name of the secret config key holding a Hugging Face token; needed "
        "for gated repos (meta-llama/*).",
    )
    local_path: str | None = Field(
        None,
        description="Weights already on the hosts at this absolute path (offline hosts); "
        "nothing is downloaded.",
    )
    download_timeout_s: int = Field(
        7200, ge=60, description="Deadline for staging the weights on a node."
    )
    hub_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Hugging Face Hub endpoint to download from (a mirror or proxy; "
        "HF_ENDPOINT); the public hub when unset.",
    )

    @field_validator("cache_dir", "local_path", "container_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(
                f"must be an absolute path, got {value!r} — use a path starting with '/' "
                "that is the same on every node"
            )
        return value
