"""Shared fixtures: real SSH hosts, amdfleet's provider plugin and a PostgreSQL server.

``hostlab(n)`` boots ``n`` real SSH hosts (see tests/support/hostlab.py); every lab it
made is torn down at the end of the session, and a lab may be closed earlier with
``with hostlab(1) as lab:``. ``provider_host`` is a running ``python -m amdfleet.plugin``
for this repository (tests/support/pulumi_host.py), started with the address of
``engine_log``, a real ``pulumirpc.Engine`` service recording the progress providers send
(tests/support/engine_log.py). ``postgres`` is the session's one private PostgreSQL server
(tests/support/postgres.py); each module makes its own database on it. Whole programs run
under the real Pulumi CLI (tests/support/pulumi_cli.py).

Each test carries a marker per prerequisite it needs (tests/support/prerequisites.py):
those of the fixtures it uses are added here, at collection.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from amdfleet.interrupts import deliver_interrupts
from tests.support.engine_log import EngineLog
from tests.support.hostlab import HostLab, LabError, LabFactory
from tests.support.postgres import PostgresServer, missing_reason
from tests.support.prerequisites import FIXTURE_MARKERS, missing
from tests.support.pulumi_host import ProviderHost

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background by a script (``.ci/run &``) inherits SIGINT and
    SIGQUIT ignored; the Pulumi CLI, vLLM and the providers the tests start would too, and
    each ``pulumi`` command would then wait 5 s for every plugin it closes."""
    deliver_interrupts()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the prerequisites of the fixtures it uses (its closure)."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in FIXTURE_MARKERS.get(fixture, ()):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def hostlab() -> Iterator[LabFactory]:
    """A factory: ``lab = hostlab(3)`` boots three SSH hosts for this session."""
    _require_lab_prerequisites()
    labs: list[HostLab] = []

    def make(count: int = 1, *, mode: str | None = None) -> HostLab:
        lab = HostLab.start(count, mode=mode)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.close()
        except LabError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def engine_log() -> Iterator[EngineLog]:
    """The engine's log service; tests read the messages of their own resource URNs."""
    with EngineLog() as log:
        yield log


@pytest.fixture(scope="session")
def provider_host(engine_log: EngineLog) -> Iterator[ProviderHost]:
    """amdfleet's provider plugin as the Pulumi CLI starts it (this repository as cwd, the
    engine's address as its argument), configured."""
    with ProviderHost.start(
        REPO_ROOT, project="amdfleet", stack="test", engine=engine_log.address
    ) as host:
        host.configure({})
        yield host


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this session, listening on 127.0.0.1 (TLS, passwords)."""
    reason = missing_reason()
    if reason is not None:
        missing("postgres", reason)
    with PostgresServer.start() as server:
        yield server


def _require_lab_prerequisites() -> None:
    if not Path("/usr/sbin/sshd").exists() or not shutil.which("ip"):
        missing("netns", "hostlab needs openssh-server and iproute2 (apt-get install -y ...)")
    if os.geteuid() != 0:
        missing("netns", "hostlab needs root (network namespaces, sshd as root)")
