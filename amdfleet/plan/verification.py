"""The ``verification`` section → the records the verification runs from
(:class:`~amdfleet.plan.models.VerificationInput` and its parts).

The section's schema (defaults, descriptions, validation) stays in
:mod:`amdfleet.config.verification`; these functions copy a validated section into the
plan's records, so the provider and :mod:`amdfleet.verify` never see a config type. The
planner resolves the parity block first (:func:`amdfleet.plan.planner.verification_plan`);
the CLI builds the same records from a stack file or from its flags.
"""

from __future__ import annotations

from amdfleet.config import AccuracySpec, BenchmarkScenario, ParitySpec, VerificationSpec
from amdfleet.plan.models import (
    AccuracyInput,
    ParityInput,
    ScenarioInput,
    ThresholdsInput,
    VerificationInput,
)


def verification_input(section: VerificationSpec, parity: ParityInput | None) -> VerificationInput:
    """The section as it runs, with ``parity`` as resolved (its reference path absolute,
    its dtype chosen); None when the section has no parity block."""
    return VerificationInput(
        enabled=section.enabled,
        scenarios=tuple(scenario_input(s) for s in section.scenarios),
        accuracy=accuracy_input(section.accuracy) if section.accuracy else None,
        parity=parity,
        thresholds=ThresholdsInput.model_validate(section.thresholds.model_dump()),
        baseline=section.baseline,
        request_timeout_s=section.request_timeout_s,
        allow_no_benchmark=section.allow_no_benchmark,
    )


def scenario_input(scenario: BenchmarkScenario) -> ScenarioInput:
    """One benchmark scenario as it runs."""
    return ScenarioInput.model_validate(scenario.model_dump())


def accuracy_input(accuracy: AccuracySpec) -> AccuracyInput:
    """The accuracy check as it runs."""
    return AccuracyInput.model_validate(accuracy.model_dump())


def parity_input(parity: ParitySpec, *, reference: str, dtype: str | None) -> ParityInput:
    """The parity check as it runs: ``reference`` the file's resolved path, ``dtype`` the
    recorded dtype it compares with."""
    return ParityInput.model_validate(
        parity.model_dump() | {"reference": reference, "dtype": dtype}
    )
