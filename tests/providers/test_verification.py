"""Verification through amdfleet's provider plugin: the gate passes or fails with the
real benchmark and GSM8K code, and shows its progress on the resource's line.

Real: the provider, run by the plugin started as the Pulumi CLI starts it (with an
engine address: a real ``pulumirpc.Engine`` service records what it sends),
the verification client, scorer and report writer, and GSM8K's test split from the
shared datasets. The endpoint is tests/support/openai_server.py, a real OpenAI-compatible
HTTP server with scripted answers (a real vLLM serves the program tests; a random-weight
model cannot give known GSM8K answers).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from amdfleet.config import VerificationSpec
from amdfleet.plan.verification import verification_input
from amdfleet.providers.readiness import VerificationGate
from amdfleet.providers.verification import Verification, VerificationProps
from amdfleet.verify.gsm8k import load_problems
from tests.support.engine_log import EngineLog
from tests.support.openai_server import MODEL, OpenAIServer, Script
from tests.support.pulumi_host import ProviderCallError, ProviderHost, secret

GSM8K = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gsm8k"
API_KEY = "verify-key-0b6e2a91f3"
RIGHT = 3
LIMIT = 6


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    """Right answers to the first RIGHT test problems (the rest get the default, wrong)."""
    test, _ = load_problems(GSM8K)
    return {p.question.strip(): f"#### {p.answer.split('####')[-1].strip()}" for p in test[:RIGHT]}


def test_a_passing_verification_shows_each_phase_and_notes_its_numbers(
    provider_host: ProviderHost, engine_log: EngineLog, answers: dict[str, str], tmp_path: Path
) -> None:
    urn = provider_host.urn("verification-progress", Verification)
    with OpenAIServer(Script(answers=answers, token_delay=0.01)) as server:
        created = provider_host.create(_props(server.url, tmp_path), urn=urn)
    assert created.outputs["passed"] is True

    statuses = engine_log.messages(urn, ephemeral=True)
    assert statuses[0] == "benchmark c2 (1 of 1): 0 of 16 requests"
    assert statuses[1] == "benchmark c2 (1 of 1): 1 of 16 requests"  # a phase's first: at once
    assert all(
        re.fullmatch(r"benchmark c2 \(1 of 1\): \d+ of 16 requests", s) for s in statuses[:-2]
    )
    accuracy = statuses[-2:]
    assert accuracy[0] == f"accuracy (gsm8k, 5-shot): 0 of {LIMIT} problems"
    assert re.fullmatch(
        rf"accuracy \(gsm8k, 5-shot\): 1 of {LIMIT} problems, [01] right so far", accuracy[1]
    )

    bench, scored, verdict = engine_log.messages(urn, ephemeral=False)
    assert re.fullmatch(r"benchmark c2: \d+ tok/s, p99 TTFT \d+ ms, 16 of 16 requests ok", bench)
    assert scored == (
        f"accuracy: GSM8K flexible-extract {RIGHT / LIMIT:.3f}, strict-match "
        f"{RIGHT / LIMIT:.3f} over {LIMIT} problems"
    )
    assert verdict.startswith("verification passed (") and bench.split(": ", 1)[1] in verdict
    assert API_KEY not in "".join(e.message for e in engine_log.entries(urn))


def test_verified_at_is_when_the_run_finished_and_only_a_new_run_moves_it(
    provider_host: ProviderHost, answers: dict[str, str], tmp_path: Path
) -> None:
    """``verified_at`` (the stack output apps read beside ``ready``) is the time the run
    finished; nothing changed means no new run (the diff) and refresh keeps the record, so
    the time stays; state written before the field existed still reads and diffs as
    unchanged (no re-verification just to fill it in)."""
    urn = provider_host.urn("verification-time", Verification)
    props = _props("", tmp_path)
    before = datetime.now(UTC).replace(microsecond=0)
    with OpenAIServer(Script(answers=answers)) as server:
        props["base_url"] = server.url
        created = provider_host.create(props, urn=urn)
    after = datetime.now(UTC)
    outs = created.outputs
    verified_at = datetime.fromisoformat(outs["verified_at"])
    assert verified_at.utcoffset() == timedelta(0)
    assert before <= verified_at <= after
    assert provider_host.diff(created.id, outs, props, urn=urn).changes is False
    read = provider_host.read(created.id, outs, inputs=props, urn=urn).outputs
    assert read["verified_at"] == outs["verified_at"]

    older = {k: v for k, v in outs.items() if k != "verified_at"}
    read = provider_host.read(created.id, older, inputs=props, urn=urn).outputs
    assert read["passed"] is True and read.get("verified_at") is None
    assert provider_host.diff(created.id, older, props, urn=urn).changes is False


def test_a_failing_verification_is_recorded_and_the_gate_fails_the_update(
    provider_host: ProviderHost, engine_log: EngineLog, answers: dict[str, str], tmp_path: Path
) -> None:
    """A missed threshold is a record (``passed`` false, what failed, the verdict table),
    so the state and the ``ready`` output tell the truth; the VerificationGate that depends
    on it fails the update with the table, on every ``up`` until the verification passes."""
    urn = provider_host.urn("verification-failing", Verification)
    props = _props("", tmp_path, min_flexible_accuracy=0.9)
    with OpenAIServer(Script(answers=answers)) as server:
        props["base_url"] = server.url
        created = provider_host.create(props, urn=urn)
    outs = created.outputs
    assert outs["passed"] is False
    assert outs["failures"] == [["gsm8k/gsm8k_flexible_extract", ">= 0.9", f"{RIGHT / LIMIT:.4g}"]]
    assert "gsm8k_flexible_extract" in outs["verdict_table"]
    assert API_KEY not in str(outs)
    notes = engine_log.messages(urn, ephemeral=False)
    assert [n.split(":")[0] for n in notes] == ["benchmark c2", "accuracy", "verification failed"]
    assert "gsm8k_flexible_extract" in notes[-1]
    # A plain re-run of `up` runs a failed verification again; a passed one is left alone.
    assert provider_host.diff(created.id, outs, props, urn=urn).changes is True

    gate = {"passed": False, "failures": outs["failures"], "verdict_table": outs["verdict_table"]}
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(gate, urn=provider_host.urn("gate-failing", VerificationGate))
    message = caught.value.message
    assert "VerificationFailed" in message and "verification failed:" in message
    assert "gsm8k_flexible_extract: expected >= 0.9" in message
    assert outs["verdict_table"].splitlines()[0] in message


def test_the_gate_passes_a_passed_verification_and_then_stays_quiet(
    provider_host: ProviderHost,
) -> None:
    urn = provider_host.urn("gate-passing", VerificationGate)
    passed = {"passed": True, "failures": [], "verdict_table": ""}
    created = provider_host.create(passed, urn=urn)
    assert created.outputs["passed"] is True
    assert provider_host.diff(created.id, created.outputs, passed, urn=urn).changes is False
    failing = {"passed": False, "failures": [["x", ">= 1", "0"]], "verdict_table": "t"}
    assert provider_host.diff(created.id, created.outputs, failing, urn=urn).changes is True


def _props(base_url: str, tmp_path: Path, **thresholds: float) -> dict[str, Any]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello.\nCount to three.\n")
    section = VerificationSpec.model_validate(
        {
            "scenarios": [
                {
                    "name": "c2",
                    "dataset": "prompts",
                    "dataset_path": str(prompts),
                    "output_len": 8,
                    "num_prompts": 16,
                    "max_concurrency": 2,
                }
            ],
            "accuracy": {
                "limit": LIMIT,
                "concurrency": 2,
                "max_tokens": 32,
                "data_path": str(GSM8K),
            },
            "thresholds": {"min_success_rate": 1.0, **thresholds},
        }
    )
    props = VerificationProps(
        base_url=base_url,
        model=MODEL,
        spec=verification_input(section, None),
        report_dir=str(tmp_path / "reports"),
    )
    return props.to_inputs(
        api_key=secret(API_KEY),
        engine_fingerprint="files-hash|digest",
        tokenizer_path=None,
    )
