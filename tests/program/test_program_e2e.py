"""The whole program, end to end: ``__main__.py`` deploys a real vLLM (CPU) on a real SSH
host, verifies it with the real benchmark and GSM8K code, is a no-op the second time,
re-verifies only when the spec changes, refuses to mark a failing stack ready, and
``destroy`` leaves nothing on the host.

Real: the SSH host (a network namespace with its own sshd, /opt, /tmp and processes),
the SDK's dynamic-provider host running every provider, vLLM serving the tiny Llama, the
verification client. The seam is the test driver standing in for the Pulumi CLI's
engine (it registers resources through the SDK's mocks API and forwards each dynamic
resource to the provider host, as the engine does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.vllm_server import missing_parts
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.program_driver import ProgramDriver
from tests.support.pulumi_host import reveal, secret

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k"
STACK = "e2e-tiny"
API_KEY = "e2e-key-3b9d27f4c1"
PORT = 18001
CACHE = "/var/lib/amdfleet/cache"

pytestmark = [pytest.mark.netns, pytest.mark.vllm]


def _config(lab: HostLab, **verification: Any) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "stacks/Pulumi.local.yaml").read_text())
    config: dict[str, Any] = document["config"]
    host = {k: v for k, v in lab.host_props(0).items() if k != "connection"}
    config["amdfleet:fleet"] = {"hosts": [host]}
    config["amdfleet:serving"] = {
        "host": lab.target(0).address,
        "port": PORT,
        "max_model_len": 2048,
    }
    config["amdfleet:engine"]["extra_env"] = {
        "VLLM_CACHE_ROOT": f"{CACHE}/vllm",
        "TORCHINDUCTOR_CACHE_DIR": f"{CACHE}/inductor",
    }
    spec = {
        "scenarios": [
            {
                "name": "c4",
                "input_len": 64,
                "output_len": 32,
                "num_prompts": 24,
                "max_concurrency": 4,
            }
        ],
        "accuracy": {"limit": 8, "concurrency": 4, "max_tokens": 32, "data_path": str(GSM8K)},
        "thresholds": {"min_success_rate": 1.0, "min_output_throughput": 5.0},
    }
    spec.update(verification)
    config["amdfleet:verification"] = spec
    config["amdfleet:apiKey"] = secret(API_KEY)
    return config


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    missing = missing_parts()
    if missing:
        pytest.fail(f"the program e2e test needs {', '.join(missing)}; run scripts/setup")
    lab = hostlab(1)
    require_netns(lab)
    return lab


@pytest.fixture(scope="module")
def driver(lab: HostLab) -> Iterator[ProgramDriver]:
    driver = ProgramDriver(project_root=ROOT, stack=STACK, config=_config(lab))
    try:
        yield driver
    finally:
        try:
            driver.destroy()
        finally:
            driver.close()


@pytest.fixture(scope="module")
def first_up(driver: ProgramDriver) -> dict[str, Any]:
    result = driver.up(MAIN)
    assert sorted(set(result.names("create"))) == [
        "deployment-engine-host0",
        "deployment-verification",
        "deployment-weights-host0",
        "fleet-host0",
    ]
    assert "api_key" in result.secret_outputs
    return result.outputs


def _engine_pid(lab: HostLab) -> int:
    return int(lab[0].path(f"/opt/amdfleet/{STACK}/engine.pid").read_text())


def _alive(lab: HostLab, pid: int) -> bool:
    with lab.connect(0) as conn:
        return conn.run(f"kill -0 {pid}", timeout=10, check=False).ok


def test_up_serves_a_verified_endpoint(first_up: dict[str, Any], lab: HostLab) -> None:
    outputs = first_up
    assert outputs["ready"] is True
    assert outputs["endpoint"] == f"http://{lab.target(0).address}:{PORT}/v1"
    assert outputs["model"] == "tiny-llama"
    assert reveal(outputs["api_key"]) == API_KEY
    (host,) = outputs["hosts"]
    assert (host["name"], host["hostname"], host["gpus"]) == ("host0", "host0", [])
    assert (
        outputs["engine"]["runtime"] == "process" and len(outputs["engine"]["command_hash"]) == 64
    )
    verification = outputs["verification"]
    assert verification["passed"] is True
    assert API_KEY not in json.dumps(verification) and API_KEY not in json.dumps(outputs["engine"])

    body = {"model": "tiny-llama", "prompt": "Hello", "max_tokens": 4}
    url = f"{outputs['endpoint']}/completions"
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    authorized = httpx.post(
        url, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )
    assert authorized.status_code == 200 and authorized.json()["usage"]["completion_tokens"] == 4


def test_example_consumer_reads_the_outputs(first_up: dict[str, Any], tmp_path: Path) -> None:
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps({k: reveal(v) for k, v in first_up.items()}))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/consumer/client.py"), STACK, "--outputs", str(saved)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # the tiny model's (random) answer


def test_second_up_changes_nothing(
    first_up: dict[str, Any], driver: ProgramDriver, lab: HostLab
) -> None:
    pid = _engine_pid(lab)
    result = driver.up(MAIN)
    assert result.urns("create") == result.urns("update") == result.urns("replace") == []
    assert _engine_pid(lab) == pid and _alive(lab, pid)
    assert result.outputs["ready"] is True


def test_a_failing_threshold_fails_the_update_and_a_fix_reruns_only_verification(
    first_up: dict[str, Any], driver: ProgramDriver, lab: HostLab
) -> None:
    pid = _engine_pid(lab)
    driver.config = _config(lab, thresholds={"min_output_throughput": 1e9})
    with pytest.raises(Exception) as caught:
        driver.up(MAIN)
    text = str(caught.value)
    assert "verification failed" in text and "output_throughput" in text
    assert _engine_pid(lab) == pid  # the engine was left running

    driver.config = _config(lab, thresholds={"min_success_rate": 1.0})
    result = driver.up(MAIN)
    assert result.names("create") + result.names("update") == ["deployment-verification"]
    assert result.outputs["ready"] is True
    assert _engine_pid(lab) == pid


def test_destroy_leaves_nothing(
    first_up: dict[str, Any], driver: ProgramDriver, lab: HostLab
) -> None:
    pid = _engine_pid(lab)
    driver.destroy()
    assert not _alive(lab, pid)
    assert not lab[0].path(f"/opt/amdfleet/{STACK}").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{lab.target(0).address}:{PORT}/health", timeout=5)
    assert driver.state == {}
    assert Path("/var/lib/amdfleet/models/tiny-llama/config.json").exists()  # a local_path stays
