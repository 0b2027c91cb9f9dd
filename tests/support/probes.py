"""One-request probes of an engine's OpenAI-compatible API, for tests that wait on it."""

from __future__ import annotations

import httpx


def completes(base_url: str, api_key: str, model: str = "tiny", timeout: float = 2.0) -> bool:
    """Whether ``POST <base_url>/v1/completions`` answers one token with 200 within
    ``timeout`` seconds (``base_url`` without ``/v1``)."""
    body = {"model": model, "prompt": "1+1=", "max_tokens": 1}
    try:
        answer = httpx.post(
            f"{base_url}/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200
