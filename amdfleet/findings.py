"""One check result: :class:`Finding`, the record config validation, the planner, host and
cluster preflight and verification all report with.

A finding is about a ``subject`` (a config field path, a host, a cluster node or the
whole cluster, a verification metric), names the ``check`` that judged it (empty when
the subject says it: a config field, a metric), says whether it passed (``ok``), what
was found (``detail``) and, when it did not pass, how to fix it (``hint``). The errors
of :mod:`amdfleet.errors` carry sequences of findings and each formats them its own way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One check's result about one subject; ``hint`` says how to fix it when ``ok`` is
    False. A verification threshold also keeps its ``expected`` and ``observed`` values
    (``detail`` reads them out)."""

    subject: str
    check: str
    ok: bool
    detail: str
    hint: str = ""
    expected: str = ""
    observed: str = ""

    @classmethod
    def threshold(cls, metric: str, expected: str, observed: str) -> Finding:
        """A failed verification threshold: ``metric`` observed ``observed`` where the
        stack expects ``expected``."""
        detail = f"expected {expected}, observed {observed}"
        return cls(metric, "", False, detail, expected=expected, observed=observed)

    def to_dict(self, subject_key: str = "") -> dict[str, Any]:
        """Plain JSON-able values under the keys check results have in Pulumi outputs:
        ``name`` (the check), ``ok``, ``detail``, ``hint``, led by the subject under
        ``subject_key`` when given (a host's preflight checks leave it out, a cluster
        finding has it as ``node``)."""
        result = {"name": self.check, "ok": self.ok, "detail": self.detail, "hint": self.hint}
        return {subject_key: self.subject, **result} if subject_key else result

    def __str__(self) -> str:
        """``subject: check: detail (hint: hint)``, the check and hint when set."""
        check = f"{self.check}: " if self.check else ""
        text = f"{self.subject}: {check}{self.detail}"
        return f"{text} (hint: {self.hint})" if self.hint else text


def config_issue(path: str, message: str, hint: str = "") -> Finding:
    """A problem in a stack (or campaign) file: the field ``path``, what is wrong with
    its value, and a fix."""
    return Finding(path, "", False, message, hint)
