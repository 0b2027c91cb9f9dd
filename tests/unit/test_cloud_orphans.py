"""``amdfleet cloud orphans``, the real CLI run as a subprocess, against a real local
DigitalOcean API server (tests/support/clouds/digitalocean_server.py: DigitalOcean's
documented droplet and size endpoints; no request leaves this machine).

What it must do: work from ``--state`` files alone (no Pulumi project, no pulumi CLI),
tell "orphans remain" (exit 1) from "could not read every state" (exit 2), show an
unknown price as unknown (never summed as $0), and, when any state cannot be read, call
nothing an orphan and delete nothing. The last is shown against a real Pulumi backend the
real ``pulumi`` CLI cannot open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amdfleet.clouds.api import CreateRequest, Instance, instance_tags
from amdfleet.clouds.digitalocean import DigitalOceanClient
from tests.support.clouds.digitalocean_server import DigitalOceanServer
from tests.support.pulumi_cli import PASSPHRASE, REPO_ROOT, require_pulumi

TOKEN = "orphans-cli-token-8d2b77e1"
CPU_SIZE = "s-4vcpu-8gb"


@pytest.fixture
def server() -> Iterator[DigitalOceanServer]:
    with DigitalOceanServer.start(TOKEN) as api:
        yield api


@pytest.fixture
def droplets(server: DigitalOceanServer) -> dict[str, Instance]:
    """Two tagged droplets of project ``amdfleet``: ``owned`` (stack ``live``) and
    ``leaked`` (stack ``gone``)."""
    made = {}
    with DigitalOceanClient(TOKEN, base_url=server.url) as client:
        for role, stack in (("owned", "live"), ("leaked", "gone")):
            made[role] = client.create(
                CreateRequest(
                    name=f"{stack}-node0",
                    region="nyc3",
                    size=CPU_SIZE,
                    image="ubuntu-24-04-x64",
                    tags=instance_tags("amdfleet", stack, "node0"),
                    user_data="",
                )
            )
    return made


def state(instance_id: str, type_: str = "amdfleet:index:CloudInstance") -> dict[str, Any]:
    """An exported state (the shape `pulumi stack export` writes) owning one instance of
    ``type_`` (the plugin's type, or the dynamic one of a stack not updated since)."""
    return {
        "version": 3,
        "deployment": {
            "manifest": {"time": "2026-12-07T00:00:00Z"},
            "resources": [
                {
                    "urn": "urn:pulumi:live::amdfleet::pulumi:pulumi:Stack::amdfleet-live",
                    "type": "pulumi:pulumi:Stack",
                },
                {
                    "urn": f"urn:pulumi:live::amdfleet::{type_}::node0",
                    "type": type_,
                    "id": instance_id,
                    "outputs": {"instance_id": instance_id, "name": "live-node0"},
                },
            ],
        },
    }


def orphans(
    server: DigitalOceanServer, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``amdfleet cloud orphans --provider digitalocean`` run in ``cwd``."""
    argv = [sys.executable, "-m", "amdfleet.cli", "cloud", "orphans", "--provider"]
    argv += ["digitalocean", "--api-url", server.url, *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    full = {**base, "DIGITALOCEAN_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def test_state_files_alone_find_and_delete_the_orphan(
    server: DigitalOceanServer, droplets: dict[str, Instance], tmp_path: Path
) -> None:
    """No Pulumi.yaml in the directory and no pulumi CLI on PATH: the --state file is
    the whole ownership. Exit 1 while the orphan remains, 0 once deleted."""
    owned, leaked = droplets["owned"], droplets["leaked"]
    (tmp_path / "live.json").write_text(json.dumps(state(owned.id)))
    no_pulumi = {"PATH": str(Path(sys.executable).parent)}

    listed = orphans(server, tmp_path, "--state", "live.json", "--json", env=no_pulumi)
    assert listed.returncode == 1, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["stack"], r["node"]) for r in rows] == [(leaked.id, "gone", "node0")]
    assert rows[0]["price_hourly_usd"] == 0.07143  # the catalog's price of s-4vcpu-8gb
    assert "ownership from 1 --state file(s)" in listed.stderr
    assert TOKEN not in listed.stdout + listed.stderr

    deleted = orphans(server, tmp_path, "--state", "live.json", "--delete", env=no_pulumi)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "deleted 1 orphan(s)" in deleted.stdout
    assert server.leaked() == [int(owned.id)]

    again = orphans(server, tmp_path, "--state", "live.json", env=no_pulumi)
    assert again.returncode == 0, again.stderr
    assert "no orphans" in again.stdout


def test_an_unreadable_state_file_deletes_nothing_and_exits_2(
    server: DigitalOceanServer, droplets: dict[str, Instance], tmp_path: Path
) -> None:
    (tmp_path / "live.json").write_text(json.dumps(state(droplets["owned"].id)))
    (tmp_path / "torn.json").write_text('{"version": 3, "deployment": {"resour')
    (tmp_path / "other.json").write_text(json.dumps({"version": 3}))
    for bad in ("torn.json", "other.json"):
        run = orphans(server, tmp_path, "--state", "live.json", "--state", bad, "--delete")
        assert run.returncode == 2, run.stdout + run.stderr
        assert f"{bad}" in run.stderr
        assert "no instance is called an orphan" in run.stderr or "not an exported" in run.stderr
        assert run.stdout == ""
    assert server.requests("DELETE", f"/v2/droplets/{droplets['leaked'].id}") == []
    assert sorted(server.leaked()) == sorted(int(d.id) for d in droplets.values())


def test_no_project_and_no_state_is_exit_2(server: DigitalOceanServer, tmp_path: Path) -> None:
    run = orphans(server, tmp_path, "--delete")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no Pulumi.yaml in ." in run.stderr
    assert "--state" in run.stderr
    assert server.requests("GET", "/v2/droplets") == []  # the cloud was not even asked


def test_an_unknown_price_is_shown_unknown_and_not_summed(
    server: DigitalOceanServer, droplets: dict[str, Instance], tmp_path: Path
) -> None:
    """A size neither the catalog nor the cloud prices: 'unknown', left out of the total
    (which says so), null in JSON."""
    basic = next(s for s in server.sizes if s["slug"] == "s-1vcpu-1gb")
    del basic["price_hourly"]
    with DigitalOceanClient(TOKEN, base_url=server.url) as client:
        unpriced = client.create(
            CreateRequest(
                name="gone-node1",
                region="nyc3",
                size="s-1vcpu-1gb",
                image="ubuntu-24-04-x64",
                tags=instance_tags("amdfleet", "gone", "node1"),
                user_data="",
            )
        )
    # A stack not updated since the plugin: its instance has the legacy dynamic type and
    # still owns its droplet (2 orphans, not 3).
    legacy = state(droplets["owned"].id, "pulumi-python:dynamic/amdfleet:CloudInstance")
    (tmp_path / "live.json").write_text(json.dumps(legacy))

    shown = orphans(server, tmp_path, "--state", "live.json")
    assert shown.returncode == 1, shown.stderr
    [row] = [line for line in shown.stdout.splitlines() if unpriced.id in line]
    assert row.rstrip().endswith("unknown")
    assert "2 orphan(s): $0.07/hour for 1, 1 at an unknown price (not counted)" in shown.stdout

    as_json = orphans(server, tmp_path, "--state", "live.json", "--json")
    prices = {r["id"]: r["price_hourly_usd"] for r in json.loads(as_json.stdout)}
    assert prices == {droplets["leaked"].id: 0.07143, unpriced.id: None}


@pytest.mark.pulumi
def test_delete_against_a_backend_it_cannot_read_deletes_nothing(
    server: DigitalOceanServer, droplets: dict[str, Instance], tmp_path: Path
) -> None:
    """The rule that protects live fleets: the project's backend cannot be read by the
    real pulumi CLI (its file:// directory is under a regular file), so although a
    readable --state is given too, nothing is called an orphan and nothing is deleted;
    exit 2. Both droplets still exist on the cloud afterwards."""
    pulumi = require_pulumi()
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: amdfleet\nruntime: python\n")
    (tmp_path / "not-a-dir").write_text("")
    (tmp_path / "live.json").write_text(json.dumps(state(droplets["owned"].id)))
    env = {
        "PATH": f"{Path(pulumi).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'not-a-dir' / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "1",
    }
    argv = ["--project-dir", str(project), "--state", str(tmp_path / "live.json"), "--delete"]
    run = orphans(server, tmp_path, *argv, env=env)

    assert run.returncode == 2, run.stdout + run.stderr
    assert f"cannot read the stacks of the project in {project}" in run.stderr
    assert "not a directory" in run.stderr  # pulumi's own words, passed on
    assert run.stdout == ""
    assert [r for r in server.log if r.method == "DELETE"] == []
    assert sorted(server.leaked()) == sorted(int(d.id) for d in droplets.values())
    with DigitalOceanClient(TOKEN, base_url=server.url) as client:
        assert all(client.get(d.id) is not None for d in droplets.values())
