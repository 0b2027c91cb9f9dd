"""The README's main job: the committed ``local`` stack, through ``__main__.py``, on this
machine (``connection: local``), serving the tiny Llama with vLLM's CPU build and passing
its own verification thresholds; then destroyed.

The stack file is used as committed, plus its API key secret (``scripts/up`` generates
one) and the path of the GSM8K copy beside the repository (a user's machine downloads
it; this one is offline). The seam is the test driver standing in for the Pulumi CLI's
engine; everything it drives is real.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.vllm_server import missing_parts
from tests.support.program_driver import ProgramDriver
from tests.support.pulumi_host import reveal, secret

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k"
API_KEY = "local-key-0a7c41e2d9"

pytestmark = pytest.mark.vllm


def test_local_stack_up_verify_destroy() -> None:
    missing = missing_parts()
    if missing:
        pytest.fail(f"the local stack needs {', '.join(missing)}; run scripts/setup")
    config = yaml.safe_load((ROOT / "stacks/Pulumi.local.yaml").read_text())["config"]
    config["amdfleet:verification"]["accuracy"]["data_path"] = str(GSM8K)
    config["amdfleet:apiKey"] = secret(API_KEY)
    driver = ProgramDriver(project_root=ROOT, stack="local", config=config)
    try:
        outputs = driver.up(ROOT / "__main__.py").outputs
        assert outputs["ready"] is True
        assert outputs["endpoint"] == "http://127.0.0.1:18000/v1"
        assert reveal(outputs["api_key"]) == API_KEY
        campaign = outputs["campaign"]
        assert campaign["on_expiry"] == "destroy" and campaign["ttl_hours"] == 1
        started = datetime.fromisoformat(campaign["started_at"])
        assert datetime.fromisoformat(campaign["expires_at"]) - started == timedelta(hours=1)
        rows = outputs["verification"]["verdict"]
        verdict = {(r["scope"], r["metric"]): r for r in rows}
        assert verdict[("c8", "output_throughput")]["passed"] is True
        assert verdict[("c8", "p99_ttft_ms")]["passed"] is True
        assert verdict[("gsm8k", "gsm8k_flexible_extract")]["passed"] is True  # threshold 0
        assert API_KEY not in json.dumps(outputs["verification"])
        report = ROOT / ".amdfleet/reports/local/verification.json"
        assert json.loads(report.read_text())["passed"] is True
        reply = httpx.post(
            f"{outputs['endpoint']}/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
            },
            timeout=60,
        )
        assert reply.status_code == 200
    finally:
        driver.destroy()
        driver.close()
    assert not Path("/opt/amdfleet/local").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get("http://127.0.0.1:18000/health", timeout=5)
