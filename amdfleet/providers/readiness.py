"""VerificationGate: fails ``pulumi up`` while the stack's verification has not passed.

A failed verification is recorded by :class:`~amdfleet.providers.verification.Verification`
(so the state and the ``ready`` output say ``false``); this resource, which depends on it,
turns that record into a failed update: its ``create``/``update`` raise
:class:`~amdfleet.errors.VerificationFailed` with the verdict table, and ``pulumi up``
exits non-zero. It touches no host. While the verification fails, every ``up`` runs it
again (its diff always reports a change), so the error is never silently dropped; once the
verification passes it is a no-op.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field

from amdfleet.errors import VerificationFailed
from amdfleet.findings import Finding
from amdfleet.providers.props import ProviderProps, plain
from amdfleet.providers.resource import AmdFleetResource


class VerificationGateProps(ProviderProps):
    """VerificationGate's properties: the verification's outcome (all Outputs of the
    :class:`~amdfleet.providers.verification.Verification` on the program side)."""

    passed: bool | None = Field(None, description="Whether the verification passed.")
    failures: list[tuple[str, str, str]] | None = Field(
        None, description="(metric, expected, observed) of each failed threshold."
    )
    verdict_table: str | None = Field(None, description="The verdict table of a failed run.")


class ReadinessGateProvider(ResourceProvider):
    """Raises while ``passed`` is false. Stateless, no I/O."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Record a passed verification; raise VerificationFailed for a failed one."""
        return CreateResult(id_="readiness", outs=_gate(VerificationGateProps.from_inputs(props)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Nothing to observe: refresh keeps the record."""
        return ReadResult(id_=id_, outs=VerificationGateProps.from_inputs(props).to_outputs())

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A change while the verification fails (so the update fails again), or when it
        starts passing. Compares raw values (``news`` may hold unknowns)."""
        passed = plain(news.get("passed"))
        return DiffResult(changes=passed is not True or plain(olds.get("passed")) is not True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """As :meth:`create`."""
        return UpdateResult(outs=_gate(VerificationGateProps.from_inputs(news)))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove."""


class VerificationGate(
    AmdFleetResource,
    name="ReadinessGate",
    provider=ReadinessGateProvider,
    props=VerificationGateProps,
):
    """Fails the update unless the verification passed (its Pulumi type keeps the name
    ReadinessGate, as does its provider class, which the state holds pickled)."""

    def __init__(
        self,
        name: str,
        opts: pulumi.ResourceOptions | None = None,
        *,
        passed: pulumi.Input[bool],
        failures: pulumi.Input[list[list[str]]],
        verdict_table: pulumi.Input[str],
    ):
        inputs = VerificationGateProps().to_inputs(
            passed=passed, failures=failures, verdict_table=verdict_table
        )
        super().__init__(name, inputs, opts)


def _gate(p: VerificationGateProps) -> dict[str, Any]:
    if p.passed is not True:
        failures = [Finding.threshold(*failure) for failure in p.failures or []]
        raise VerificationFailed(failures, p.verdict_table or "")
    return p.to_outputs()
