"""The tests' PostgreSQL server (tests/support/postgres.py) left by a killed run is
cleaned up by the next, and a live session's server is left alone.

Real: a test session stand-in (a Python process) starts a server and is SIGKILLed while
it runs, as a CI job killed at its timeout would be; its server keeps running, as such a
server would. The next :func:`remove_orphans` kills that server and removes its directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, missing_reason, remove_orphans
from tests.support.prerequisites import missing

ROOT = Path(__file__).resolve().parents[2]
SESSION = """
import sys
from tests.support.postgres import PostgresServer
with PostgresServer.start() as server:
    print(server.directory, server.proc.pid, flush=True)
    sys.stdin.read()  # never returns: the test kills this session mid-run
"""

pytestmark = pytest.mark.postgres


def test_a_killed_sessions_server_is_removed_and_a_live_ones_kept() -> None:
    reason = missing_reason()
    if reason is not None:
        missing("postgres", reason)
    session = subprocess.Popen(
        [sys.executable, "-c", SESSION],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout is not None
        directory_text, pid_text = session.stdout.readline().split()
        directory, postmaster = Path(directory_text), int(pid_text)
        with PostgresServer.start() as live:  # its owner (this process) runs: kept
            assert directory not in remove_orphans()
            assert directory.exists() and _running(postmaster)
            session.send_signal(signal.SIGKILL)
            session.wait(timeout=30)
            assert _running(postmaster)  # the server outlives its session

            assert directory in remove_orphans()
            assert not directory.exists()
            assert not _running(postmaster)
            assert live.directory.exists() and live.sql("SELECT 1;").strip() == "1"
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    assert not live.directory.exists()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: this machine's PID 1 reaps nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
