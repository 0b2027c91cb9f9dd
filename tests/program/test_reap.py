"""``amdfleet reap`` against real stacks with the real Pulumi CLI, clock injected.

Real: the Pulumi CLI and engine under the Automation API, a file backend, the
passphrase secrets provider and a dynamic resource per stack whose create writes a
marker file and whose delete removes it (tests/support/reap_program), so a destroy is
seen on disk. The stacks export amdfleet's own ``campaign`` output
(``amdfleet.components.campaign_output``), built from a fixed ``started_at``; ``--now``
puts the clock where each stack is expired, due later or without expiry. The real
amdfleet program is not deployed here (a minute per up): only its output shape matters.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pulumi_cli import PulumiWorkspace

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "tests/support/reap_program"
STARTED = "2026-01-01T00:00:00+00:00"
NOW = "2026-01-01T06:48:00+00:00"
STACKS = {  # name -> config beyond the marker
    "expired-destroy": {"ttlHours": 1, "onExpiry": "destroy"},
    "expired-stuck": {"ttlHours": 1.5, "onExpiry": "destroy"},
    "expired-warn": {"ttlHours": 2, "onExpiry": "warn", "owner": "alice@example.com"},
    "future": {"ttlHours": 10, "onExpiry": "destroy"},
    "no-ttl": {"onExpiry": "destroy"},
    "plain": {"campaign": False},
}

pytestmark = pytest.mark.pulumi


class Reaptest:
    def __init__(self, workspace: PulumiWorkspace, markers: Path) -> None:
        self.workspace = workspace
        self.markers = markers

    def marker(self, stack: str) -> Path:
        return self.markers / f"{stack}.marker"

    def reap(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "amdfleet.cli", "reap"]
        argv += ["--project-dir", str(self.workspace.root), "--now", NOW, *args]
        env = {**self.workspace.env, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    def stacks(self) -> list[str]:
        run = self.workspace.run(["stack", "ls", "--json"], timeout=60)
        return sorted(s["name"] for s in json.loads(run.stdout))


@pytest.fixture(scope="module")
def reaptest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reaptest]:
    root = tmp_path_factory.mktemp("reap")
    markers = root / "markers"
    markers.mkdir()
    workspace = PulumiWorkspace(root / "project", project="reaptest", main=PROGRAM)
    workspace.env["PYTHONPATH"] = str(ROOT)
    test = Reaptest(workspace, markers)
    try:
        for name, extra in STACKS.items():
            config = {"reaptest:marker": str(test.marker(name)), "reaptest:startedAt": STARTED}
            config.update({f"reaptest:{k}": v for k, v in extra.items()})
            workspace.init_stack(name, config)
            workspace.up(name, timeout=300)
        yield test
    finally:
        test.marker("expired-stuck").with_suffix(".stuck").unlink(missing_ok=True)
        for name in STACKS:
            workspace.run(["destroy", "--yes", "--stack", name], check=False, timeout=300)
            workspace.run(["stack", "rm", "--yes", name], check=False, timeout=60)


def _decisions(stdout: str) -> dict[str, str]:
    """Stack -> its decision, from the table (stack, expires_at, on_expiry, decision)."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0] in STACKS:
            rows[parts[0]] = parts[3]
    return rows


def test_dry_run_decides_for_every_stack_and_destroys_nothing(reaptest: Reaptest) -> None:
    run = reaptest.reap("--dry-run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _decisions(run.stdout) == {
        "expired-destroy": "would destroy: expired 5h48m ago (dry run)",
        "expired-stuck": "would destroy: expired 5h18m ago (dry run)",
        "expired-warn": "warn: expired 4h48m ago (owner alice@example.com); left running",
        "future": "ok, expires in 3h12m",
        "no-ttl": "no expiry",
        "plain": "skip: no amdfleet campaign output",
    }
    assert "2026-01-01T01:00:00+00:00  destroy" in run.stdout
    warning = (
        "warning: stack expired-warn (expires_at 2026-01-01T02:00:00+00:00): "
        "warn: expired 4h48m ago (owner alice@example.com); left running"
    )
    assert warning in run.stderr
    assert all(reaptest.marker(name).exists() for name in STACKS)


def test_a_second_reap_while_one_holds_the_lock_does_nothing(reaptest: Reaptest) -> None:
    lock = reaptest.workspace.root / ".amdfleet/reap.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run = reaptest.reap()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "another amdfleet reap is running" in run.stdout
    assert "stack" not in _decisions(run.stdout)
    assert all(reaptest.marker(name).exists() for name in STACKS)


def test_reap_destroys_the_expired_stacks_only_and_keeps_them(reaptest: Reaptest) -> None:
    workspace = reaptest.workspace
    before = {name: workspace.resources(name) for name in STACKS}
    stuck = reaptest.marker("expired-stuck").with_suffix(".stuck")
    stuck.write_text("delete fails while this file exists\n")

    run = reaptest.reap()
    assert run.returncode == 1, run.stdout + run.stderr  # one destroy failed
    decisions = _decisions(run.stdout)
    assert decisions["expired-destroy"] == (
        "destroyed (expired 5h48m ago); stack kept, no resources left"
    )
    assert decisions["expired-stuck"] == "failed: destroy failed (expired 5h18m ago)"
    assert "error: stack expired-stuck" in run.stderr
    assert "  | " in run.stderr and "is stuck" in run.stderr  # the destroy's own output
    assert not reaptest.marker("expired-destroy").exists()
    assert workspace.resources("expired-destroy") == {}
    assert "expired-destroy" in reaptest.stacks()  # resources gone, the stack is kept
    for name in ("expired-warn", "future", "no-ttl", "plain"):
        assert reaptest.marker(name).exists(), name
        assert workspace.resources(name).keys() == before[name].keys(), name
    assert reaptest.marker("expired-stuck").exists()

    # The cause fixed, the next run destroys what is left to destroy, and only that.
    stuck.unlink()
    run = reaptest.reap()
    assert run.returncode == 0, run.stdout + run.stderr  # a warning alone exits 0
    decisions = _decisions(run.stdout)
    assert decisions["expired-destroy"] == "skip: nothing deployed (already destroyed)"
    assert decisions["expired-stuck"].startswith("destroyed (expired 5h18m ago)")
    assert not reaptest.marker("expired-stuck").exists()

    # Idempotent: nothing to do the third time; --strict fails on the warned stack.
    run = reaptest.reap("--strict")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "nothing to destroy" in run.stdout
    decisions = _decisions(run.stdout)
    assert decisions["expired-stuck"] == "skip: nothing deployed (already destroyed)"
    assert decisions["expired-warn"].startswith("warn: expired 4h48m ago")
    assert sorted(reaptest.stacks()) == sorted(STACKS)
    for name in ("expired-warn", "future", "no-ttl", "plain"):
        assert reaptest.marker(name).exists(), name


def test_bad_now_names_the_option_and_a_valid_form(reaptest: Reaptest) -> None:
    argv = [sys.executable, "-m", "amdfleet.cli", "reap", "--now", "tomorrow"]
    run = subprocess.run(
        argv,
        cwd=reaptest.workspace.root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "--now" in run.stderr and "'tomorrow' is not an ISO 8601 time" in run.stderr
