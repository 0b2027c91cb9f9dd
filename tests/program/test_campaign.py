"""Benchmark campaigns for real: ``amdfleet campaign run`` on this machine, through the
Automation API and the real Pulumi CLI, against a throwaway file backend or, as a team
shares its state, a PostgreSQL database (tests/support/postgres.py).

The committed ``campaigns/local-max-num-seqs.yaml`` (two variants of the ``local`` stack,
vLLM's CPU build) runs whole with its state in PostgreSQL (the backend URL carrying the
role's password, which appears in nothing the campaign writes or prints): both variants
up, two concurrency points and a small GSM8K check each, every stack destroyed and
removed, no engine left. The interrupt test sends
a terminal's Ctrl-C (SIGINT to the process group) in the middle of the first variant's
second point: the journal says where it stopped, what was started is destroyed, and
``campaign resume`` finishes without running a finished point again. The API key comes
from AMDFLEET_SECRET_APIKEY, as a user would give it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from amdfleet.campaign.journal import read_events
from tests.e2e.vllm_server import missing_parts
from tests.support.local_stack import local_config, with_tiny_llama
from tests.support.postgres import Database, PostgresServer
from tests.support.processes import group_alive
from tests.support.pulumi_cli import PASSPHRASE, REPO_ROOT, require_pulumi
from tests.support.waiting import wait_until

API_KEY = "campaign-key-5be01f9a"
SWEEP = {
    "name": "conc",
    "kind": "concurrency",
    "values": [1, 2],
    "prompts_per_point": 8,
    "input_len": 64,
    "output_len": 256,
}


def tiny_llama(serving: dict[str, Any]) -> dict[str, Any]:
    """Overrides serving the tiny random Llama with ``serving``: the interrupt tests are
    about the campaign's mechanics, and their points must stay ~10 s (SmolLM2 takes ~100 s
    for one of them here). Random weights have no parity reference, so none is checked."""
    config = with_tiny_llama(local_config())
    verification = {**config["amdfleet:verification"], "parity": None}
    return {
        "model": config["amdfleet:model"],
        "weights": config["amdfleet:weights"],
        "serving": serving,
        "verification": verification,
    }


ENGINES = Path("/opt/amdfleet")
CLI = (sys.executable, "-m", "amdfleet.cli", "campaign")

# slow: whole deployments of a real engine, minutes each.
pytestmark = [pytest.mark.pulumi, pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    require_pulumi()
    missing = missing_parts()
    if missing:
        pytest.fail(f"the local stack needs {', '.join(missing)}; run scripts/setup")
    (tmp_path / "state").mkdir()
    (tmp_path / "home").mkdir()
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PULUMI_HOME": str(tmp_path / "home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "1",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "AMDFLEET_SECRET_APIKEY": API_KEY,
    }
    for key in ("PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_ACCESS_TOKEN"):
        environ.pop(key, None)
    return environ


@pytest.fixture
def postgres_env(env: dict[str, str], postgres: PostgresServer) -> tuple[dict[str, str], Database]:
    """``env`` with a PostgreSQL database as the backend, its password in the URL."""
    database = postgres.database("campaign")
    return {**env, "PULUMI_BACKEND_URL": database.url()}, database


class Campaign:
    """``python -m amdfleet.cli campaign ...`` as a terminal's foreground job."""

    def __init__(self, env: dict[str, str], directory: Path, *args: str) -> None:
        self.directory = directory
        self.log = (directory.parent / f"{directory.name}-{args[0]}.log").open("w")
        self.proc = subprocess.Popen(
            [*CLI, *args, "--dir", str(directory)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.engines: dict[str, int] = {}

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.directory / "journal.jsonl")

    def has(self, event: str, **fields: Any) -> bool:
        return any(
            e["event"] == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.events()
        )

    def note_engines(self) -> None:
        """Remember every running engine's process group (while we poll)."""
        for pid_file in ENGINES.glob("*/engine.pid"):
            try:
                self.engines[pid_file.parent.name] = int(pid_file.read_text())
            except (OSError, ValueError):
                continue

    def wait(self, timeout: float) -> str:
        def finished() -> bool:
            self.note_engines()
            return self.proc.poll() is not None

        try:
            wait_until(finished, timeout, "the campaign command to exit", interval=0.5)
        finally:
            self.kill()
        self.log.close()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_campaign_runs_both_variants_and_leaves_nothing_running(
    tmp_path: Path, postgres_env: tuple[dict[str, str], Database], postgres: PostgresServer
) -> None:
    env, database = postgres_env
    directory = tmp_path / "local"
    campaign = Campaign(env, directory, "run", "campaigns/local-max-num-seqs.yaml", "--plain")
    try:
        output = campaign.wait(timeout=1200)
        assert campaign.proc.returncode == 0, output
        results = json.loads((directory / "results.json").read_text())
        assert [v["label"] for v in results["variants"]] == ["seqs4", "seqs16"]
        for variant in results["variants"]:
            assert variant["status"] == "done", variant["error"]
            assert [(p["sweep"], p["load"]) for p in variant["points"]] == [
                ("concurrency", 2),
                ("concurrency", 8),
            ]
            for point in variant["points"]:
                assert point["completed"] == 16 and point["failed"] == 0
                assert point["output_throughput"] > 0 and point["max_concurrency"] == point["load"]
            assert variant["accuracy"]["n"] == 8
            assert variant["endpoint"] == "http://127.0.0.1:18000/v1"
            assert variant["verification"]["passed"] is True
        assert results["finished_at"] is not None
        _assert_report_shows_both(directory / "report", ["seqs4", "seqs16"])
        events = [e["event"] for e in campaign.events()]
        assert events.count("destroy_done") == 2 and events[-1] == "campaign_done"
        assert "point seqs4 conc@8 (2/2) started" in output and "eta" in output
        assert API_KEY not in (directory / "journal.jsonl").read_text()
        assert API_KEY not in (directory / "results.json").read_text() + output
        _assert_nothing_left(
            campaign, env, ["local-max-num-seqs-seqs4", "local-max-num-seqs-seqs16"]
        )
        written = [p for p in directory.rglob("*") if p.is_file() and p.suffix != ".png"]
        assert directory / "logs/seqs4-up.log" in written  # the CLI's output, kept
        for text in [output, *(p.read_text(errors="replace") for p in written)]:
            assert database.password not in text
        # Both variants' stacks lived in the database (`stack rm` keeps their last state
        # and backups there), nothing on this disk.
        keys = postgres.sql("SELECT key FROM pulumi_state;", database=database.name)
        for label in ("seqs4", "seqs16"):
            assert f".pulumi/backups/amdfleet/local-max-num-seqs-{label}/" in keys, keys
        assert not any((tmp_path / "state").iterdir())
    finally:
        campaign.kill()
        _destroy_leftovers(directory, env)


def _assert_report_shows_both(report: Path, labels: list[str]) -> None:
    """The campaign's report: every file, and both variants in its sweep table and plots."""
    for name in ("report.md", "report.json", "report.html"):
        assert (report / name).is_file(), name
    data = json.loads((report / "report.json").read_text())
    for plot in ("throughput_vs_concurrency.png", "latency_vs_load.png", "frontier.png"):
        assert plot in data["plots"], data["skipped_plots"]
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [sweep] = data["sweeps"]
    plotted = {(row["variant"], row["load"]) for row in sweep["rows"] if row["output_throughput"]}
    assert plotted == {(label, load) for label in labels for load in (2, 8)}
    markdown = (report / "report.md").read_text()
    assert all(label in markdown for label in labels)


def test_ctrl_c_destroys_what_it_started_and_resume_skips_finished_points(
    tmp_path: Path, env: dict[str, str]
) -> None:
    file = tmp_path / "ctrlc.yaml"
    campaign = {
        "variants": [
            {"label": "a", "stack": "local", "overrides": tiny_llama({"max_num_seqs": 4})},
            {"label": "b", "stack": "local", "overrides": tiny_llama({"max_num_seqs": 8})},
        ],
        # points of ~10 s, so the Ctrl-C surely lands inside the second one
        "sweeps": [SWEEP],
    }
    file.write_text(yaml.safe_dump(campaign))
    directory = tmp_path / "ctrlc"
    first = Campaign(env, directory, "run", str(file), "--plain")
    try:

        def first_point_done() -> bool:
            first.note_engines()
            return first.has("point_done", variant="a", load="1")

        wait_until(first_point_done, 900, "variant a's first point")
        os.killpg(first.proc.pid, signal.SIGINT)
        output = first.wait(timeout=300)
        assert first.proc.returncode == 1, output
        assert "campaign resume" in output
        stops = [e for e in first.events() if e["event"] == "interrupted"]
        assert [s["where"] for s in stops] == ["a: sweep conc at load 2"], output
        assert first.has("destroy_done", variant="a")
        assert not first.has("variant_up_started", variant="b")  # nothing after the stop
        _assert_nothing_left(first, env, ["ctrlc-a"])

        second = Campaign(env, directory, "resume", str(file), "--plain")
        output = second.wait(timeout=1200)
        assert second.proc.returncode == 0, output
        done = Counter(
            (e["variant"], e["load"]) for e in second.events() if e["event"] == "point_done"
        )
        assert done == {("a", "1"): 1, ("a", "2"): 1, ("b", "1"): 1, ("b", "2"): 1}
        results = json.loads((directory / "results.json").read_text())
        assert [(v["status"], len(v["points"])) for v in results["variants"]] == [
            ("done", 2),
            ("done", 2),
        ]
        _assert_nothing_left(second, env, ["ctrlc-a", "ctrlc-b"])
    finally:
        first.kill()
        _destroy_leftovers(directory, env)


def _assert_nothing_left(campaign: Campaign, env: dict[str, str], names: list[str]) -> None:
    """No stack in the campaign's project; each named stack's engine seen, gone and its
    directory removed."""
    stacks = _stacks(campaign.directory, env)
    assert stacks == [], f"stacks left: {stacks}"
    for name in names:
        assert name in campaign.engines, f"never saw {name}'s engine: {campaign.engines}"
        assert not (ENGINES / name).exists(), f"{ENGINES / name} left behind"
        assert not group_alive(campaign.engines[name]), f"{name}'s engine still runs"


def _stacks(directory: Path, env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        ["pulumi", "stack", "ls", "--json", "--non-interactive"],
        cwd=directory / "project",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [s["name"] for s in json.loads(proc.stdout)]


def _destroy_leftovers(directory: Path, env: dict[str, str]) -> None:
    """Test cleanup: destroy any stack a failed assertion left up."""
    project = directory / "project"
    if not project.exists():
        return
    for name in _stacks(directory, env):
        subprocess.run(
            ["pulumi", "destroy", "--yes", "--non-interactive", "-s", name],
            cwd=project,
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )


def test_a_second_ctrl_c_skips_the_destroys_and_says_what_is_still_up(
    tmp_path: Path, env: dict[str, str]
) -> None:
    file = tmp_path / "twice.yaml"
    campaign = {
        "variants": [{"label": "a", "stack": "local", "overrides": tiny_llama({})}],
        "sweeps": [SWEEP],
    }
    file.write_text(yaml.safe_dump(campaign))
    directory = tmp_path / "twice"
    first = Campaign(env, directory, "run", str(file), "--plain")
    try:
        wait_until(lambda: first.has("point_done"), 900, "the first point")
        os.killpg(first.proc.pid, signal.SIGINT)
        # the second press lands while the destroy runs (it takes seconds here)
        wait_until(lambda: first.has("destroy_started"), 120, "the destroy", interval=0.05)
        os.killpg(first.proc.pid, signal.SIGINT)
        output = first.wait(timeout=300)
        assert first.proc.returncode == 1, output
        assert "second Ctrl-C: destroys skipped; still up: twice-a" in output
        assert f"(cd {directory / 'project'} && pulumi destroy --yes -s twice-a)" in output
        assert not first.has("destroy_done")
        assert (ENGINES / "twice-a").exists()  # left up, as the user asked
        status = subprocess.run(
            [*CLI, "status", str(file), "--dir", str(directory), "--json"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (row,) = json.loads(status.stdout)
        assert (row["state"], row["may_be_up"], row["points_done"]) == ("interrupted", True, 1)
        assert row["expires_at"] is not None  # the local stack's 1 h TTL

        second = Campaign(env, directory, "resume", str(file), "--plain")
        output = second.wait(timeout=900)
        assert second.proc.returncode == 0, output
        loads = [e["load"] for e in second.events() if e["event"] == "point_done"]
        assert loads == ["1", "2"]
        _assert_nothing_left(second, env, ["twice-a"])
    finally:
        first.kill()
        _destroy_leftovers(directory, env)
