"""The verification's plan records: what the planner builds from the config section.

A live stack's Verification resource holds the record's JSON as its ``spec`` input and
re-runs when that changes, so the record must serialize key for key as the config
section did when it was the input (only the parity block differs: the planner resolves
its reference path and dtype)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amdfleet.config import BenchmarkScenario, VerificationSpec, load_stack_file
from amdfleet.plan import plan
from amdfleet.plan.models import VerificationInput
from amdfleet.plan.verification import scenario_input, verification_input

REPO = Path(__file__).resolve().parents[2]
STACK_FILES = sorted((REPO / "stacks").glob("Pulumi.*.yaml")) + sorted(
    (REPO / "tests/unit/stacks").glob("Pulumi.*.yaml")
)


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_the_planned_record_serializes_as_the_section_did(path: Path) -> None:
    spec = load_stack_file(str(path)).spec
    planned = plan(spec).verification.input.model_dump(mode="json")
    section = spec.verification.model_dump(mode="json")
    if section["parity"] is not None:
        assert planned["parity"]["reference"].endswith(section["parity"]["reference"])
        assert planned["parity"]["dtype"] is not None
        section["parity"].update(reference=None, dtype=None)
        planned["parity"].update(reference=None, dtype=None)
    assert planned == section


def test_absent_optional_keys_are_none() -> None:
    # The engine drops null properties from a resource's state.
    record = verification_input(
        VerificationSpec(scenarios=(BenchmarkScenario(name="c1"),)), parity=None
    )
    dumped = record.model_dump(mode="json")
    without_nulls = {k: v for k, v in dumped.items() if v is not None}
    without_nulls["scenarios"] = [
        {k: v for k, v in s.items() if v is not None} for s in dumped["scenarios"]
    ]
    without_nulls["thresholds"] = {k: v for k, v in dumped["thresholds"].items() if v is not None}
    assert VerificationInput.model_validate(without_nulls) == record


def test_repeated_scenario_names_are_refused() -> None:
    record = verification_input(
        VerificationSpec(scenarios=(BenchmarkScenario(name="c1"),)), parity=None
    )
    twice = record.model_dump() | {
        "scenarios": [scenario_input(BenchmarkScenario(name="c1")).model_dump()] * 2
    }
    with pytest.raises(ValueError, match="repeated: c1"):
        VerificationInput.model_validate(twice)
