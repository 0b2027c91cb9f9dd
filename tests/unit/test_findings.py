"""The one check-result record: how a finding reads, and the keys it has in Pulumi
outputs (a host's preflight checks, a cluster's findings)."""

from __future__ import annotations

from amdfleet.findings import Finding, config_issue


def test_a_config_issue_reads_as_path_message_and_hint() -> None:
    assert str(config_issue("serving.port", "must be > 0", "use 8000")) == (
        "serving.port: must be > 0 (hint: use 8000)"
    )
    assert str(config_issue("name", "unknown key")) == "name: unknown key"


def test_a_threshold_keeps_expected_and_observed() -> None:
    failure = Finding.threshold("throughput/tok_s", ">= 600", "512")
    assert (failure.subject, failure.ok, failure.expected, failure.observed) == (
        "throughput/tok_s",
        False,
        ">= 600",
        "512",
    )
    assert str(failure) == "throughput/tok_s: expected >= 600, observed 512"


def test_output_keys_are_the_ones_existing_stacks_hold() -> None:
    finding = Finding("node-1", "shm", False, "/dev/shm is 1.0 GiB", "remount it")
    assert finding.to_dict() == {
        "name": "shm",
        "ok": False,
        "detail": "/dev/shm is 1.0 GiB",
        "hint": "remount it",
    }
    assert list(finding.to_dict("node")) == ["node", "name", "ok", "detail", "hint"]
    assert finding.to_dict("node")["node"] == "node-1"
