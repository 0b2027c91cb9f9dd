"""Fixtures for provider progress: the dynamic-provider host started as the Pulumi CLI
starts it, with the address of an engine (a real ``pulumirpc.Engine`` gRPC service that
records what the providers send, tests/support/engine_log.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine_log import EngineLog
from tests.support.pulumi_host import ProviderHost

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def engine_log() -> Iterator[EngineLog]:
    """The engine's log service; tests read the messages of their own resource URNs."""
    with EngineLog() as log:
        yield log


@pytest.fixture(scope="session")
def reporting_host(engine_log: EngineLog) -> Iterator[ProviderHost]:
    """``python -m pulumi.dynamic <engine address>``: providers report progress."""
    with ProviderHost.start(
        REPO_ROOT, project="amdfleet", stack="test", engine=engine_log.address
    ) as host:
        host.configure({})
        yield host
