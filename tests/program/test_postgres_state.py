"""Team state in a real database: the Pulumi CLI's PostgreSQL backend
(``pulumi login postgres://...``), as a team shares it.

Real: a PostgreSQL server this session starts (tests/support/postgres.py: Debian's server
on 127.0.0.1, TLS verified with ``sslmode=verify-full``, a role with a password owning the
database), the real Pulumi CLI and engine with the passphrase secrets provider, and two
tiny programs whose resources are files: tests/support/gate_program (a create that holds
until the test opens a gate, so one ``up`` surely runs while another starts) and
tests/support/reap_program (amdfleet's own ``campaign`` output, as test_reap.py uses it).
The state is read back with SQL from the backend's table, ``pulumi_state``.

- Two ``up``s of one stack: the second, started while the first holds the stack's lock,
  fails with Pulumi's lock message naming the first's PID, runs no program and writes
  nothing; the first then finishes. (Pulumi's DIY lock is check, write, check again: two
  started in the same instant may both refuse, never both proceed.)
- ``amdfleet reap`` over that backend: the dry run decides for the expired stack and
  destroys nothing; the real run destroys it, with the password taken from a pgpass file
  (the URL without it), as the README's team set-up does.
- The backend URL's password is never in amdfleet's output: with a wrong one, the CLI
  names the URL with its password replaced (``[credential]``), and ``amdfleet reap`` and
  ``amdfleet status`` report the refusal with a hint, the URL's password masked again
  (``***``) and neither password anywhere.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.postgres import Database, PostgresServer
from tests.support.pulumi_cli import PulumiWorkspace
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
GATE_PROGRAM = ROOT / "tests/support/gate_program"
REAP_PROGRAM = ROOT / "tests/support/reap_program"
STARTED = "2026-01-01T00:00:00+00:00"
NOW = "2026-01-01T06:48:00+00:00"
TABLE = "pulumi_state"  # the backend's default table

pytestmark = pytest.mark.pulumi


@dataclass
class StateDatabase:
    """The backend's database, read with SQL as its superuser."""

    server: PostgresServer
    database: Database

    @property
    def url(self) -> str:
        return self.database.url()

    def rows(self) -> dict[str, str]:
        """Every blob the backend stored but the locks: key -> its data and time."""
        return {k: v for k, v in self._rows().items() if "/.pulumi/locks/" not in k}

    def locks(self) -> list[str]:
        return sorted(k for k in self._rows() if "/.pulumi/locks/" in k)

    def keys(self, like: str) -> list[str]:
        return sorted(k for k in self._rows() if like in k)

    def _rows(self) -> dict[str, str]:
        query = f"SELECT key, md5(data::text) || ' ' || updated_at FROM {TABLE} ORDER BY key;"
        out = self.server.sql(query, database=self.database.name)
        return dict(line.split("|", 1) for line in out.splitlines() if line)


@pytest.fixture(scope="module")
def state(postgres: PostgresServer) -> StateDatabase:
    return StateDatabase(postgres, postgres.database("pgstate"))


def _workspace(root: Path, project: str, program: Path, url: str) -> PulumiWorkspace:
    workspace = PulumiWorkspace(root / project, project=project, main=program)
    workspace.env["PULUMI_BACKEND_URL"] = url
    workspace.env["PYTHONPATH"] = str(ROOT)
    return workspace


def test_a_second_up_while_one_runs_fails_on_the_lock_and_changes_nothing(
    state: StateDatabase, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path, "gatetest", GATE_PROGRAM, state.url)
    files = {name: tmp_path / name for name in ("runs", "started", "release", "creates")}
    workspace.init_stack("gate", {f"gatetest:{k}": str(v) for k, v in files.items()})
    first = workspace.start(["up", "--yes", "--skip-preview", "--stack", "gate"])
    try:
        wait_until(
            lambda: files["started"].exists() or first.proc.poll() is not None,
            120,
            "the first up's create to begin",
        )
        assert files["started"].exists(), first.output()
        locks, before = state.locks(), state.rows()
        second = workspace.up("gate", check=False, timeout=120)
        locks_after, after = state.locks(), state.rows()
        files["release"].touch()
        first_output = first.wait(timeout=120)
    finally:
        files["release"].touch()
        first.kill()

    assert len(locks) == 1 and locks_after == locks  # the first up's lock, untouched
    assert second.returncode != 0
    message = second.text
    assert "the stack is currently locked by 1 lock(s)" in message, message
    assert "`pulumi cancel`" in message
    assert f"(pid {first.proc.pid})" in message  # the lock names the first up
    assert state.database.password not in message  # Pulumi masks the URL in the lock's name
    assert after == before  # no checkpoint, history or backup from the refused up
    assert files["runs"].read_text().count("\n") == 1  # its program never ran

    assert first.returncode == 0, first_output
    assert files["creates"].read_text().count("\n") == 1
    assert state.locks() == []
    assert "gate" in workspace.resources("gate")
    assert state.keys(".pulumi/stacks/gatetest/gate.json")  # the state is in the table
    workspace.destroy("gate")
    workspace.run(["stack", "rm", "--yes", "gate"])


@dataclass
class ReapProject:
    workspace: PulumiWorkspace
    marker: Path

    def amdfleet(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "amdfleet.cli", *args],
            cwd=self.workspace.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def reap(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        project = str(self.workspace.root)
        return self.amdfleet("reap", "--project-dir", project, "--now", NOW, *args, env=env)


@pytest.fixture(scope="module")
def reap_project(
    state: StateDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReapProject]:
    """Project ``pgreap`` with one stack, ``expired``, up: its TTL ended 5h48m before NOW."""
    root = tmp_path_factory.mktemp("pgreap")
    workspace = _workspace(root, "pgreap", REAP_PROGRAM, state.url)
    project = ReapProject(workspace, root / "expired.marker")
    config = {
        "pgreap:marker": str(project.marker),
        "pgreap:startedAt": STARTED,
        "pgreap:ttlHours": 1,
        "pgreap:onExpiry": "destroy",
    }
    workspace.init_stack("expired", config)
    try:
        workspace.up("expired", timeout=300)
        yield project
    finally:
        workspace.run(["destroy", "--yes", "--stack", "expired"], check=False, timeout=300)
        workspace.run(["stack", "rm", "--yes", "expired"], check=False, timeout=60)


def test_reap_dry_run_then_reap_with_the_password_from_a_pgpass_file(
    reap_project: ReapProject, state: StateDatabase, tmp_path: Path
) -> None:
    workspace = reap_project.workspace
    before = workspace.resources("expired")
    run = reap_project.reap("--dry-run", env=workspace.env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "would destroy: expired 5h48m ago (dry run)" in run.stdout
    assert reap_project.marker.exists()
    assert workspace.resources("expired").keys() == before.keys()
    assert state.database.password not in run.stdout + run.stderr

    # The team set-up: the URL without the password, which comes from a pgpass file.
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(state.database.pgpass_line())
    pgpass.chmod(0o600)
    env = {
        **workspace.env,
        "PULUMI_BACKEND_URL": state.database.url(with_password=False),
        "PGPASSFILE": str(pgpass),
    }
    run = reap_project.reap(env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "destroyed (expired 5h48m ago); stack kept, no resources left" in run.stdout
    assert not reap_project.marker.exists()
    assert workspace.resources("expired") == {}
    assert state.database.password not in run.stdout + run.stderr


def test_a_refused_login_is_reported_without_the_password(
    reap_project: ReapProject, state: StateDatabase
) -> None:
    workspace = reap_project.workspace
    wrong = "wrong-" + secrets.token_hex(8)
    env = {**workspace.env, "PULUMI_BACKEND_URL": state.database.url(password=wrong)}
    raw = subprocess.run(
        [workspace.pulumi, "stack", "ls", "--non-interactive"],
        cwd=workspace.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The CLI names the URL it could not open, its password replaced by "[credential]".
    assert raw.returncode != 0
    assert 'unable to open state database "postgres://pgstate:[credential]@' in raw.stderr
    assert wrong not in raw.stdout + raw.stderr

    reap = reap_project.reap(env=env)
    said = reap.stdout + reap.stderr
    assert reap.returncode == 1, said
    assert "cannot list the stacks of the project in" in reap.stderr
    assert 'password authentication failed for user "pgstate"' in reap.stderr
    assert "postgres://pgstate:***@127.0.0.1:" in reap.stderr
    assert "hint: check the backend" in reap.stderr
    assert "Traceback" not in said

    status = reap_project.amdfleet("status", "expired", env=env)
    said = status.stdout + status.stderr
    assert status.returncode == 1, said
    assert "cannot read stack expired" in said and "postgres://pgstate:***@" in said
    for text in (reap.stdout, reap.stderr, status.stdout, status.stderr):
        assert wrong not in text
        assert state.database.password not in text
