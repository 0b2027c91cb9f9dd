"""A recorded output-parity reference: reading and checking it (no HTTP client here, so
``amdfleet plan`` and the Pulumi program check a stack's reference before anything else
runs). The check itself is :mod:`amdfleet.verify.parity`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amdfleet.config import StackSpec
from amdfleet.errors import AmdFleetError, PlanError
from amdfleet.findings import Finding, config_issue
from amdfleet.plan import DeploymentPlan, plan
from amdfleet.plan.models import ParityInput

FORMAT = 1


REFERENCE_FIELD = "verification.parity.reference"


class ParityReferenceError(AmdFleetError):
    """A parity reference that cannot be read or does not fit the check; ``field`` is the
    stack field to fix."""

    def __init__(self, message: str, hint: str, field: str = REFERENCE_FIELD) -> None:
        super().__init__(f"{field}: {message} — {hint}")
        self.field, self.message, self.hint = field, message, hint


@dataclass(frozen=True)
class ReferencePrompt:
    """One prompt and its recorded greedy continuation per dtype."""

    prompt: str
    prompt_ids: tuple[int, ...] | None
    continuations: Mapping[str, tuple[int, ...]]
    text: Mapping[str, str]


@dataclass(frozen=True)
class ParityReference:
    """A recorded reference: which model and revision, how, and the continuations."""

    path: str
    sha256: str
    model: str
    revision: str
    recorded_by: str
    recorded_at: str
    max_tokens: int
    eos_token_ids: tuple[int, ...]
    dtypes: tuple[str, ...]
    prompts: tuple[ReferencePrompt, ...]

    @classmethod
    def load(cls, path: str | Path) -> ParityReference:
        """Read and check a reference file; :class:`ParityReferenceError` says what is wrong."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ParityReferenceError(
                f"parity reference {path}: {e.strerror or e}",
                "record one with `amdfleet parity record` against a known-good deployment "
                "(the local stacks' is written by scripts/setup)",
            ) from e
        try:
            data = json.loads(raw)
            return cls._parse(data, str(path), hashlib.sha256(raw).hexdigest())
        except (ValueError, KeyError, TypeError) as e:
            raise ParityReferenceError(
                f"parity reference {path} is not a reference amdfleet wrote ({e})",
                "record it again with `amdfleet parity record`",
            ) from e

    @classmethod
    def _parse(cls, data: Mapping[str, Any], path: str, digest: str) -> ParityReference:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        dtypes = tuple(str(d) for d in data["dtypes"])
        prompts = []
        for item in data["prompts"]:
            continuations = {d: tuple(int(t) for t in item["continuations"][d]) for d in dtypes}
            ids = item.get("prompt_ids")
            prompts.append(
                ReferencePrompt(
                    prompt=str(item["prompt"]),
                    prompt_ids=tuple(int(t) for t in ids) if ids else None,
                    continuations=continuations,
                    text={str(k): str(v) for k, v in (item.get("text") or {}).items()},
                )
            )
        if not prompts:
            raise ValueError("no prompts")
        return cls(
            path=path,
            sha256=digest,
            model=str(data["model"]),
            revision=str(data.get("revision") or ""),
            recorded_by=str(data.get("recorded_by") or ""),
            recorded_at=str(data.get("recorded_at") or ""),
            max_tokens=int(data["max_tokens"]),
            eos_token_ids=tuple(int(t) for t in data.get("eos_token_ids") or ()),
            dtypes=dtypes,
            prompts=tuple(prompts),
        )

    def continuations_for(self, dtype: str) -> list[tuple[int, ...]]:
        """Each prompt's recorded continuation in ``dtype``, or a ParityReferenceError."""
        if dtype not in self.dtypes:
            raise ParityReferenceError(
                f"parity reference {self.path} holds {', '.join(self.dtypes)} continuations, "
                f"not {dtype}",
                f"compare in one of those (verification.parity.dtype), or record a {dtype} "
                "reference",
                field="verification.parity.dtype",
            )
        return [p.continuations[dtype] for p in self.prompts]

    def describe(self) -> dict[str, Any]:
        """Where the reference came from (for results and reports)."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "model": self.model,
            "revision": self.revision,
            "recorded_by": self.recorded_by,
            "recorded_at": self.recorded_at,
        }


def load_reference(parity: ParityInput) -> ParityReference:
    """A planned parity block's reference (its path resolved, its dtype set), read and
    checked against the block: the file is there and amdfleet's, it holds continuations in
    the dtype compared, and at least ``tokens`` of them. Raises
    :class:`ParityReferenceError` naming the field to fix."""
    reference = ParityReference.load(parity.reference)
    if parity.dtype is None:
        raise ParityReferenceError(
            "not set, and the dtype the engine serves is not known",
            f"set it to one of the reference's dtypes: {', '.join(reference.dtypes)}",
            field="verification.parity.dtype",
        )
    reference.continuations_for(parity.dtype)
    if parity.tokens > reference.max_tokens:
        raise ParityReferenceError(
            f"{parity.tokens}, but {reference.path} recorded {reference.max_tokens} tokens "
            "per prompt",
            f"compare at most {reference.max_tokens} tokens, or record a longer reference",
            field="verification.parity.tokens",
        )
    return reference


def reference_issues(parity: ParityInput | None) -> list[Finding]:
    """What :func:`load_reference` finds wrong with a planned parity block, as issues
    (none without a parity block)."""
    if parity is None:
        return []
    try:
        load_reference(parity)
    except ParityReferenceError as e:
        return [config_issue(e.field, e.message, e.hint)]
    return []


def checked_plan(spec: StackSpec) -> DeploymentPlan:
    """:func:`~amdfleet.plan.plan`, then the files the plan names on this machine (the
    parity reference): what the Pulumi program, ``amdfleet plan`` and ``scripts/up`` run
    before anything is provisioned. Raises :class:`PlanError` naming the field."""
    resolved = plan(spec)
    if issues := reference_issues(resolved.verification.input.parity):
        raise PlanError(issues, f"stack {spec.name}")
    return resolved
