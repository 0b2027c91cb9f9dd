"""``amdfleet status``'s pure parts: the verdict from the checks, the last verification's
summary, and the engine nodes read from a stack's exported state (built here from the
engine providers' own props models, as the providers record them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from amdfleet.cli.status import (
    Check,
    EngineNode,
    StackView,
    StatusReport,
    engine_nodes,
    judge,
    render_report,
    stack_view,
    verification_summary,
)
from amdfleet.errors import AmdFleetError
from amdfleet.providers.engine_cluster import EngineClusterNode, EngineClusterProps
from amdfleet.providers.engine_node import EngineFile, ReadinessCheck
from amdfleet.providers.engine_service import EngineServiceProps
from amdfleet.providers.resource import LEGACY_TYPE_PREFIX, type_token
from amdfleet.remote.transport.target import HostTarget

ENGINE_OK = Check("engine", "host0", True, "running (process supervisor)")
ENGINE_DEAD = Check("engine", "host1", False, "not running (the process supervisor ...)")
MODELS_OK = Check("models", "endpoint", True, "lists tiny-llama")
MODELS_BAD = Check("models", "endpoint", False, "tiny-llama is not listed (listed: other)")
TOKEN_OK = Check("completion", "endpoint", True, "1 token in 0.05 s")
TOKEN_BAD = Check("completion", "endpoint", False, "no answer within 10 s")
VERIFIED = Check("verification", "stack", True, "passed at ...")
NOT_VERIFIED = Check("verification", "stack", False, "did not pass at ...")
READINESS = ReadinessCheck(
    serves_api=True, base_url="http://127.0.0.1:8000", paths=("/health",), timeout_s=60
)


@pytest.mark.parametrize(
    ("checks", "verdict", "named"),
    [
        ([ENGINE_OK, MODELS_OK, TOKEN_OK, VERIFIED], "serving", []),
        ([ENGINE_OK, MODELS_OK, TOKEN_OK], "serving", []),  # a stack without verification
        ([ENGINE_OK, ENGINE_DEAD, MODELS_OK, TOKEN_OK, VERIFIED], "degraded", ["host1"]),
        ([ENGINE_OK, MODELS_BAD, TOKEN_OK, VERIFIED], "degraded", ["is not listed"]),
        ([ENGINE_OK, MODELS_OK, TOKEN_OK, NOT_VERIFIED], "degraded", ["did not pass"]),
        ([ENGINE_OK, ENGINE_DEAD, MODELS_OK, TOKEN_BAD, VERIFIED], "down", ["host1", "within"]),
        ([ENGINE_OK, MODELS_OK, TOKEN_BAD, VERIFIED], "down", ["no answer within 10 s"]),
        ([ENGINE_OK, MODELS_OK], "down", []),  # no completion checked: never "serving"
    ],
    ids=[
        "all-pass",
        "no-verification",
        "a-node-down",
        "model-missing",
        "last-verification-failed",
        "dead-worker-hangs-completions",
        "no-token",
        "completion-unchecked",
    ],
)
def test_verdict(checks: list[Check], verdict: str, named: list[str]) -> None:
    got, reason = judge(checks)
    assert got == verdict
    if verdict == "serving":
        assert reason == "every check passed"
    for text in named:
        assert text in reason
    passed = {c.subject + c.name for c in checks if c.ok}
    for check in checks:  # the reason names exactly the failed checks
        assert (f"{check.subject}: {check.name} " in reason) is (
            check.subject + check.name not in passed
        )


def test_verification_summary_counts_the_judged_rows_and_names_the_failed() -> None:
    rows = [
        {"scope": "c4", "metric": "output_throughput", "observed": 3.2, "expected": ">= 5"},
        {"scope": "c4", "metric": "success_rate", "observed": 1.0, "expected": ">= 1"},
        {"scope": "c4", "metric": "ttft_ratio", "observed": 0.9, "passed": None},  # shown only
    ]
    passed = [{**rows[0], "passed": True}, {**rows[1], "passed": True}, rows[2]]
    assert verification_summary({"passed": True, "verdict": passed}) == "2 of 2 checks passed"
    failed = [{**rows[0], "passed": False}, {**rows[1], "passed": True}, rows[2]]
    assert verification_summary({"passed": False, "verdict": failed}) == (
        "1 of 2 checks failed: c4/output_throughput 3.2 (expected >= 5)"
    )
    assert "verification.enabled is false" in verification_summary({"enabled": False})


@pytest.mark.parametrize(
    "type_of", [type_token, LEGACY_TYPE_PREFIX.__add__], ids=["plugin", "legacy"]
)
def test_engine_nodes_are_read_from_both_engine_resources_in_the_state(
    type_of: Callable[[str], str],
) -> None:
    """The plugin's types, and the dynamic ones of a stack not updated since."""
    one = HostTarget(name="solo", address="10.77.0.2", host_key="SHA256:abc", key_path="/k")
    service = EngineServiceProps(
        host=one,
        remote_dir="/opt/amdfleet/a",
        files={"amdfleet-a.service": EngineFile(content="[Unit]\n", mode=0o644)},
        readiness=READINESS,
    )
    head, worker = (
        HostTarget(name=f"n{i}", address=f"10.77.0.{i + 3}", host_key="SHA256:x") for i in (0, 1)
    )
    cluster = EngineClusterProps(
        nodes=tuple(
            EngineClusterNode(
                name=host.name, host=host, remote_dir="/opt/amdfleet/b", files={}, container="c"
            )
            for host in (head, worker)
        ),
        readiness=READINESS,
    )
    state = {
        "resources": [
            {"type": "pulumi:pulumi:Stack", "outputs": {"ready": True}},
            _resource(type_of("SshHost"), {"host": one.model_dump(mode="json")}),
            _resource(type_of("EngineService"), service.started_outputs()),
            _resource(type_of("EngineCluster"), cluster.started_outputs()),
        ]
    }
    solo, n0, n1 = engine_nodes(state)
    assert solo == EngineNode("solo", one, "/opt/amdfleet/a", "amdfleet-a.service", None)
    assert (n0.name, n0.host, n0.container) == ("n0", head, "c")
    assert (n1.name, n1.host, n1.unit) == ("n1", worker, "amdfleet-b.service")


def test_a_stack_with_nothing_deployed_is_an_error_that_says_so() -> None:
    with pytest.raises(AmdFleetError, match="stack gone: it has no outputs: nothing is deployed"):
        stack_view("gone", {}, {})
    with pytest.raises(AmdFleetError, match=r"lacks outputs \(endpoint, model missing\)"):
        stack_view("other", {"ready": True, "bucket": "b"}, {})


def test_the_report_names_the_verdict_and_never_the_key() -> None:
    view = StackView(
        stack="s",
        endpoint="http://10.77.0.2:8000/v1",
        model="tiny-llama",
        ready=True,
        verified_at="2026-12-07T19:00:00+00:00",
        verification={"passed": True, "verdict": []},
        nodes=(),
        api_key="sk-not-printed-0123",
    )
    checks = (ENGINE_DEAD, MODELS_OK, TOKEN_OK, VERIFIED)
    report = StatusReport(view, *judge(checks), checks, 1.25)
    text = render_report(report)
    assert text.splitlines()[0] == (
        "stack s: degraded, tokens come back, but 1 of 4 checks failed (checked in 1.2 s)"
    )
    assert "last verification: 2026-12-07T19:00:00+00:00, ready true" in text
    row = next(line for line in text.splitlines() if line.startswith("engine "))
    assert row.split()[:4] == ["engine", "host1", "FAILED", "not"]
    assert report.reason.startswith("host1: engine not running")
    assert report.exit_code == 3
    document = report.to_json()
    assert document["verdict"] == "degraded" and document["seconds"] == 1.25
    assert "sk-not-printed-0123" not in text + str(document) + repr(view)


def _resource(type_: str, outputs: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "outputs": outputs}
