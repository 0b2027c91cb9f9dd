"""The ``serving`` section: the endpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from amdfleet.addresses import check_address
from amdfleet.config.base import CONFIG_KEY_RE, SpecModel


class ServingSpec(SpecModel):
    """The OpenAI-compatible endpoint."""

    host: str = Field(
        "0.0.0.0",
        description="Address the engine listens on: an IPv4 or IPv6 address ('::' for "
        "all IPv6 interfaces) or a host name.",
    )
    port: int = Field(8000, ge=1, le=65535, description="Port the engine listens on.")
    api_key_secret: str | None = Field(
        "apiKey",
        pattern=CONFIG_KEY_RE,
        description="Name of the secret config key with the API key clients must send "
        "(`openssl rand -hex 24 | pulumi config set --secret apiKey`); null serves without "
        "authentication.",
    )
    max_model_len: int | None = Field(
        None, ge=256, description="Maximum context per request; defaults to the model's."
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Maximum concurrent sequences; engine default if unset."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=256, description="Tokens per scheduler step (vLLM)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Activation and weight dtype the engine computes in (--dtype). 'auto': "
        "the checkpoint's own dtype on GPUs; float32 on CPUs, the one dtype every CPU "
        "computes correctly (vLLM's bfloat16 CPU path needs AVX-512 BF16; without it the "
        "output is garbage, measured here). An explicit bfloat16 on a CPU host without "
        "avx512_bf16 or amx_bf16 fails the host check.",
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", description="KV-cache dtype: 'auto' (model dtype) or 'fp8'."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.1, le=0.98, description="Fraction of GPU memory the engine may use."
    )
    min_full_context_seqs: int = Field(
        1,
        ge=1,
        description="How many sequences at max_model_len the KV cache must hold at once; "
        "the planner rejects a layout that cannot.",
    )

    @field_validator("host")
    @classmethod
    def _host_form(cls, value: str) -> str:
        return check_address(value)
