"""The campaign journal: an append-only JSON-lines file, one event per line.

Each event is written, flushed and fsync'd before the runner goes on, so after a crash
the journal says exactly what was done. A torn last line (a crash mid-write) is ignored
on read. :func:`replay` folds the events into a :class:`CampaignState`, from which
``resume`` knows what to skip and ``results.json`` is rebuilt.

Events: ``campaign_started``, ``variant_up_started``, ``variant_up_done`` (outputs
without secrets), ``point_done`` (variant, sweep, load, result), ``accuracy_done``,
``variant_done`` (every step finished), ``variant_failed`` (error),
``destroy_started``, ``destroy_done``, ``interrupted`` (where), ``campaign_done``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENTS = (
    "campaign_started",
    "variant_up_started",
    "variant_up_done",
    "point_done",
    "accuracy_done",
    "variant_done",
    "variant_failed",
    "destroy_started",
    "destroy_done",
    "interrupted",
    "campaign_done",
)


class Journal:
    """Appends events to ``path`` (created with its directory); safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event with a UTC timestamp; returns the record written."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        record.update(fields)
        line = json.dumps(record, sort_keys=False, default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event in the journal, in order (none when it does not exist). A
    last line that is not valid JSON (torn by a crash) is skipped."""
    if not path.exists():
        return []
    events = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: corrupt journal line") from None
    return events


@dataclass
class VariantState:
    """What the journal says about one variant."""

    label: str
    stack: str = ""
    status: str = "pending"
    """``pending``, ``up``, ``done``, ``failed``, ``interrupted`` or ``destroyed``."""
    may_be_up: bool = False
    """An up was started and no destroy finished since: the stack may hold resources."""
    outputs: dict[str, Any] = field(default_factory=dict)
    points: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(sweep name, load label) → the point's journaled record."""
    accuracy: dict[str, Any] | None = None
    error: str | None = None
    finished: bool = False
    """Every step (sweeps, accuracy) completed; only teardown may be left."""
    point_seconds: list[float] = field(default_factory=list)


@dataclass
class CampaignState:
    """The journal folded: the campaign's start/end and each variant's state."""

    started: dict[str, Any] | None = None
    finished_at: str | None = None
    interrupted: dict[str, Any] | None = None
    variants: dict[str, VariantState] = field(default_factory=dict)

    def variant(self, label: str) -> VariantState:
        """The state of ``label`` (pending when the journal never named it)."""
        return self.variants.setdefault(label, VariantState(label))


def replay(path: Path) -> CampaignState:
    """Fold the journal at ``path`` into a :class:`CampaignState`."""
    state = CampaignState()
    for event in read_events(path):
        _apply(state, event)
    return state


def _apply(state: CampaignState, event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "campaign_started":
        state.started = state.started or event
        state.finished_at = None
        state.interrupted = None
        return
    if kind == "campaign_done":
        state.finished_at = event["ts"]
        return
    if kind == "interrupted":
        state.interrupted = event
    label = event.get("variant")
    if label is None:
        return
    v = state.variant(label)
    v.stack = event.get("stack", v.stack)
    if kind == "variant_up_started":
        v.may_be_up, v.status, v.error = True, "pending", None
    elif kind == "variant_up_done":
        v.status, v.outputs = "up", event.get("outputs") or {}
    elif kind == "point_done":
        v.points[(event["sweep"], str(event["load"]))] = event
        v.point_seconds.append(float(event.get("seconds") or 0.0))
    elif kind == "accuracy_done":
        v.accuracy = event.get("result")
    elif kind == "variant_done":
        v.finished, v.status = True, "done"
    elif kind == "variant_failed":
        v.status, v.error = "failed", event.get("error")
    elif kind == "interrupted":
        v.status = "interrupted"
    elif kind == "destroy_done":
        v.may_be_up = False
        if v.status in ("up", "pending"):
            v.status = "destroyed"
