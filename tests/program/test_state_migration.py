"""A stack created by the last release before the provider plugin moves over in place.

That release (:data:`RELEASE`, the last commit with Python dynamic resources) is checked
out of this repository's own history with ``git archive`` and deploys a stack for real:
its Pulumi.yaml, its ``plugins/pulumi-python`` host, its ``__main__.py`` and its
``amdfleet`` package (first on ``PYTHONPATH``), the repo's virtualenv, the real CLI, a
real vLLM on this machine. Then the same workspace runs *this* checkout's program and
plugin on that state, as a user's upgrade does:

* the first ``up`` adopts every resource through its alias: nothing is created, replaced
  or deleted; each amdfleet resource is updated only to drop the pickled provider, and
  the engine is not restarted (its PID, and the time its verification ran, are kept);
* the state then holds only ``amdfleet:index:*`` types, no ``__provider`` anywhere, and
  no ``pulumi-python`` provider; a second ``up`` changes nothing;
* ``destroy`` with the new plugin removes everything the old release made.

Needs the repository's history (a full clone, as CI's): the test says so if it is shallow.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.vllm_server import missing_parts
from tests.support.local_stack import assert_answers_paris, quick_verification
from tests.support.processes import alive
from tests.support.pulumi_cli import PulumiWorkspace, write_project

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "40c813c"
"""The last commit whose resources were Python dynamic resources (before the plugin)."""
STACK = "migrate"
PORT = 18020
API_KEY = "migrate-key-5d0e9b"
ENGINE_DIR = Path("/opt/amdfleet") / STACK
LEGACY = "pulumi-python:dynamic/amdfleet:"

pytestmark = [pytest.mark.pulumi, pytest.mark.vllm, pytest.mark.slow]


def test_a_stack_of_the_dynamic_release_moves_to_the_plugin_without_a_restart(
    tmp_path: Path,
) -> None:
    missing = missing_parts()
    if missing:
        pytest.fail(f"the migration test needs {', '.join(missing)}; run scripts/setup")
    release = _checkout(RELEASE, tmp_path / "release")
    ws = PulumiWorkspace(tmp_path / "project")
    _use_release(ws, release)
    ws.stack_file(STACK).write_text(yaml.safe_dump(_stack(release)))
    ws.run(["stack", "init", STACK], timeout=60)
    ws.set_secret(STACK, "apiKey", API_KEY)
    try:
        old = ws.up(STACK)
        assert set(old.changed().values()) == {"create"}
        before = ws.resources(STACK)
        kinds = {r["type"] for r in before.values()}
        assert f"{LEGACY}EngineService" in kinds and "pulumi:providers:pulumi-python" in kinds
        engine_pid = int((ENGINE_DIR / "engine.pid").read_text())
        verified_at = ws.outputs(STACK)["verified_at"]

        write_project(ws.root)  # this checkout's project: its program and its plugin
        ws.env.pop("PYTHONPATH", None)
        moved = ws.up(STACK)
        assert not {"create", "replace", "create-replacement", "delete"} & set(
            moved.changed().values()
        ), moved.changed()
        amdfleet_resources = {name for name, r in before.items() if r["type"].startswith(LEGACY)}
        assert {n for n, op in moved.changed().items() if op == "update"} == amdfleet_resources
        assert int((ENGINE_DIR / "engine.pid").read_text()) == engine_pid and alive(engine_pid)
        outputs = ws.outputs(STACK, show_secrets=True)
        assert outputs["verified_at"] == verified_at  # the verification did not run again
        assert outputs["ready"] is True
        assert_answers_paris(outputs["endpoint"], API_KEY, "smollm2-135m-instruct")

        after = ws.resources(STACK)
        assert amdfleet_resources <= set(after)
        for name in amdfleet_resources:
            state = after[name]
            assert state["type"] == "amdfleet:index:" + before[name]["type"][len(LEGACY) :]
            assert "__provider" not in state.get("outputs", {}), name
            assert "__provider" not in state.get("inputs", {}), name
        assert not any(r["type"] == "pulumi:providers:pulumi-python" for r in after.values())
        assert ws.up(STACK).changed() == {}
    finally:
        ws.destroy(STACK)
    assert not ENGINE_DIR.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=5)


def _checkout(commit: str, target: Path) -> Path:
    """``commit``'s tree in ``target``, from this repository's history."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        pytest.fail(
            f"commit {commit} (the release before the provider plugin) is not in this "
            "clone's history; the migration test needs a full clone (git fetch --unshallow)"
        )
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
        capture_output=True,
        check=True,
    )
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def _use_release(ws: PulumiWorkspace, release: Path) -> None:
    """Point the workspace at the release: its Pulumi.yaml (paths made absolute), its
    program, and its package first on the import path of the language host and of its
    ``pulumi-python`` plugin."""
    document: dict[str, Any] = yaml.safe_load((release / "Pulumi.yaml").read_text())
    document["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
    document["main"] = str(release)
    document["stackConfigDir"] = "stacks"
    for plugin in document["plugins"]["providers"]:
        plugin["path"] = str(release / plugin["path"])
    (ws.root / "Pulumi.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    ws.env["PYTHONPATH"] = str(release)


def _stack(release: Path) -> dict[str, Any]:
    """The release's ``local`` stack on a port of its own, with a short verification."""
    document: dict[str, Any] = yaml.safe_load((release / "stacks/Pulumi.local.yaml").read_text())
    config = document["config"]
    config["amdfleet:serving"]["port"] = PORT
    config["amdfleet:verification"] = quick_verification(config["amdfleet:verification"])
    return document
