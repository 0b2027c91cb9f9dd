"""``amdfleet stacks/plan/render`` run as the installed console script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amdfleet.config import load_stack_file, stack_names

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
    assert "apiKey: NOT SET: pulumi config set --secret amdfleet:apiKey" in out


def test_plan_json_is_the_plan() -> None:
    result = run("plan", "mi300x-2node-llama405b-bf16", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [n["rank"] for n in data["nodes"]] == [0, 1]
    memory = data["memory"]
    # 405.85 B parameters (Meta's model card) at 2 bytes over PP2 x TP8 = 16 GPUs
    assert memory["weights_gib"] == pytest.approx(405.85e9 * 2 / 16 / 2**30, rel=1e-3)
    # MI300X: 192 GB HBM, of which the stack lets vLLM use 0.9
    assert (memory["gpu_memory_gib"], memory["usable_gib"]) == (192, pytest.approx(192 * 0.9))
    # K and V x 126 layers / 2 stages x 8 KV heads / TP8 x head dim 128 x 2 bytes (BF16)
    assert memory["kv_bytes_per_token"] == 2 * (126 // 2) * (8 // 8) * 128 * 2


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
    path = BAD / f"Pulumi.bad-{bad}.yaml"
    header = path.read_text()  # the file states the field and the text its error must show
    field = re.search(r"^# expect-path: (.+)$", header, re.MULTILINE)
    text = re.search(r"^# expect-text: (.+)$", header, re.MULTILINE)
    assert field and text
    result = run("render", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert f"bad-{bad}" in result.stderr  # the stack
    assert f"{field.group(1).strip()}: " in result.stderr  # the field path
    assert text.group(1).strip() in result.stderr  # what is wrong or how to fix it
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # nothing written


def test_stacks_lists_every_stack() -> None:
    result = run("stacks")
    assert result.returncode == 0
    # a line per stack, starting with its name (a header line, if any, is not a stack)
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert set(stack_names()) <= set(listed)
    for name in stack_names():
        description = load_stack_file(name).spec.description
        assert " ".join(description.split()) in " ".join(listed[name].split())


# --- multi-node facts in the printout (issue 10) ------------------------------------------
STACKS = Path(__file__).parent / "stacks"


def _printed(stack: str) -> str:
    from amdfleet.cli.stack import format_plan
    from amdfleet.plan import plan

    loaded = load_stack_file(stack)
    return format_plan(loaded, plan(loaded.spec))


def _section(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index(title) + 1
    return lines[start : lines.index("", start)]


@pytest.mark.parametrize(
    ("stack", "purpose", "head_port"),
    [
        (str(STACKS / "Pulumi.sglang-2node.yaml"), "dist-init", "10.0.1.1:5000"),
        (str(STACKS / "Pulumi.ray-2node.yaml"), "Ray GCS", "10.0.0.1:6380"),  # ray_port: 6380
        ("mi300x-2node-llama405b-bf16", "rendezvous", "10.10.0.1:29500"),
    ],
)
def test_plan_prints_the_head_address_and_its_ports(
    stack: str, purpose: str, head_port: str
) -> None:
    cluster = _section(_printed(stack), "cluster")
    head = head_port.rsplit(":", 1)[0]
    assert cluster[0].split()[:2] == ["head", head]
    assert re.match(r"\s+API port\s+8000: the OpenAI API on the head only", cluster[1])
    assert [line.split()[-1] for line in cluster[2:-1]] == [head_port]
    assert purpose in cluster[2]
    assert cluster[-1].split()[:2] == ["collective", "traffic"]
    assert "read from its facts at deploy" in cluster[-1]


def test_plan_prints_what_sglang_workers_serve_and_where_each_node_sits() -> None:
    out = _printed(str(STACKS / "Pulumi.sglang-2node.yaml"))
    assert "workers answer /health, /health_generate only" in out
    assert "(head) stage 0, tp ranks 0-7" in out  # TP16: one stage spread over both nodes
    assert "(worker) stage 0, tp ranks 8-15" in out


def test_plan_prints_each_pipeline_stage_where_they_differ() -> None:
    """SGLang PP2 × TP8 of 405B BF16: stage 0 also holds the embeddings (LM head on both),
    4,202,692,608 B / 8 = 0.49 GiB more per GPU (see test_plan_memory's arithmetic)."""
    out = _printed(str(STACKS / "Pulumi.sglang-2node-pp2.yaml"))
    title = "memory per GPU (GiB), pipeline stage 0 of 2 (the tightest; up to 63 layers per stage)"
    rows = {line.split()[1]: line.split()[2] for line in _section(out, title) if "stage" in line}
    assert rows == {"0": "47.74", "1": "47.25"}
    assert "(head) stage 0, tp ranks 0-7" in out and "(worker) stage 1, tp ranks 0-7" in out


def test_a_single_node_plan_prints_no_cluster_and_no_stages() -> None:
    out = _printed("mi355x-llama70b")
    assert "\ncluster\n" not in out
    assert "memory per GPU (GiB)\n" in out and "pipeline stage" not in out
