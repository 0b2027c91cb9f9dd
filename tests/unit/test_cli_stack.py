"""``amdfleet stacks/plan/render`` run as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AMDFLEET = shutil.which("amdfleet", path=str(Path(sys.executable).parent)) or "amdfleet"
BAD = Path(__file__).parent / "bad_stacks"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMDFLEET, *args], capture_output=True, text=True, timeout=60)


def test_plan_prints_hosts_memory_image_and_commands() -> None:
    result = run("plan", "mi355x-llama70b")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "AMD Instinct MI355X (gfx950)" in out
    assert "amd/Llama-3.3-70B-Instruct-FP8-KV" in out
    assert "memory per GPU (GiB)" in out and "KV cache" in out
    assert "[0] mi355x-01 192.0.2.10 (head)" in out
    assert "$ vllm serve amd/Llama-3.3-70B-Instruct-FP8-KV" in out
    assert "apiKey: NOT SET" in out


def test_plan_json_is_the_plan() -> None:
    result = run("plan", "mi300x-2node-llama405b-bf16", "--json")
    data = json.loads(result.stdout)
    assert [n["rank"] for n in data["nodes"]] == [0, 1]
    assert data["memory"]["weights_gib"] > 40


def test_plan_accepts_a_path() -> None:
    result = run("plan", str(Path(__file__).parent / "stacks/Pulumi.ray-2node.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ray start --head" in result.stdout


def test_render_writes_every_file(tmp_path: Path) -> None:
    result = run("render", "mi355x-llama70b", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert names == {
        "manifest.json",
        "plan.json",
        "image/Dockerfile.gfx950",
        "node0-mi355x-01/launch.sh",
        "node0-mi355x-01/engine.env",
    }  # no systemd unit: dockerd's restart policy supervises the docker runtime
    assert (tmp_path / "node0-mi355x-01/launch.sh").stat().st_mode & 0o111


@pytest.mark.parametrize("bad", ["17-405b-bf16-tp4-mi300x", "02-typo-field"])
def test_bad_stack_exits_1_with_the_issue(bad: str, tmp_path: Path) -> None:
    result = run("render", str(BAD / f"Pulumi.bad-{bad}.yaml"), "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # nothing written


def test_stacks_lists_every_stack() -> None:
    result = run("stacks")
    assert result.returncode == 0
    assert "mi355x-llama70b " in result.stdout and "local " in result.stdout
