"""``amdfleet campaign``: run, resume and inspect benchmark campaigns."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from amdfleet.campaign.journal import CampaignState
from amdfleet.campaign.runner import campaign_dir, eta_seconds, load_state, run_campaign
from amdfleet.campaign.spec import Campaign, load_campaign
from amdfleet.tables import table

_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Campaign directory (journal, results, report, Pulumi project); default "
    ".amdfleet/campaigns/<name>.",
)
_PLAIN = click.option(
    "--plain", is_flag=True, help="One line per event (automatic when not a TTY)."
)
_FILE = click.argument(
    "campaign_file", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)


@click.group("campaign")
def campaign_group() -> None:
    """Run a matrix of stacks through the same sweeps, journaled, resumable and torn down.

    Secrets a stack needs come from AMDFLEET_SECRET_<KEY> (e.g. AMDFLEET_SECRET_APIKEY);
    a missing API key is generated. The Pulumi backend and passphrase are the ones the
    `pulumi` command would use (PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE).
    """


@campaign_group.command("run")
@_FILE
@_DIR
@_PLAIN
def run_command(campaign_file: Path, directory: Path | None, plain: bool) -> None:
    """Run CAMPAIGN_FILE: each variant up, its sweeps and accuracy, then torn down."""
    _run(campaign_file, directory, plain)


@campaign_group.command("resume")
@_FILE
@_DIR
@_PLAIN
def resume_command(campaign_file: Path, directory: Path | None, plain: bool) -> None:
    """Continue CAMPAIGN_FILE from its journal, skipping finished points and variants."""
    _run(campaign_file, directory, plain)


@campaign_group.command("status")
@_FILE
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(campaign_file: Path, directory: Path | None, as_json: bool) -> None:
    """Show every variant of CAMPAIGN_FILE: state, stack, points done and expiry."""
    campaign = load_campaign(campaign_file)
    state = load_state(campaign_dir(campaign.name, directory))
    rows = status_rows(campaign, state)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["variant", "state", "stack", "up", "points", "expires_at", "error"]
    body = [
        [
            r["variant"],
            r["state"],
            r["stack"],
            "yes" if r["may_be_up"] else "no",
            f"{r['points_done']}/{r['points_total']}",
            r["expires_at"] or "-",
            (r["error"] or "").splitlines()[0][:60] if r["error"] else "",
        ]
        for r in rows
    ]
    click.echo(table(headers, body))


@campaign_group.command("report")
@click.argument("results_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for report.md, report.json, report.html and the PNG plots.",
)
def report_command(results_file: Path, out_dir: Path) -> None:
    """Write the report of a campaign's RESULTS_FILE (results.json) into --out."""
    from amdfleet.campaign.report import write_report

    for path in write_report(results_file, out_dir):
        click.echo(str(path))


def status_rows(campaign: Campaign, state: CampaignState) -> list[dict[str, Any]]:
    """One row per variant: its state, stack, whether it may be up, points and expiry."""
    total = len(campaign.points())
    rows = []
    for variant in campaign.variants:
        v = state.variant(variant.label)
        expiry = (v.outputs.get("campaign") or {}).get("expires_at") if v.may_be_up else None
        rows.append(
            {
                "variant": variant.label,
                "state": v.status,
                "stack": variant.stack.name,
                "may_be_up": v.may_be_up,
                "points_done": len(v.points),
                "points_total": total,
                "expires_at": expiry,
                "error": v.error,
            }
        )
    return rows


def _run(campaign_file: Path, directory: Path | None, plain: bool) -> None:
    campaign = load_campaign(campaign_file)
    where = campaign_dir(campaign.name, directory)
    live = not plain and sys.stdout.isatty()
    reporter = LiveView(campaign, where) if live else PlainLog(campaign, where)
    try:
        state = run_campaign(campaign, where, reporter, write_report=_report_writer())
    finally:
        reporter.close()
    bad = [v.label for v in state.variants.values() if v.status in ("failed", "interrupted")]
    if state.interrupted is not None or bad:
        raise click.ClickException(
            f"campaign {campaign.name} did not finish: "
            + (
                ", ".join(f"{label} {state.variant(label).status}" for label in bad)
                or "interrupted"
            )
            + f"; `amdfleet campaign resume {campaign_file}` continues it"
        )


def _report_writer() -> Any:
    """The report writer, imported only when a run ends (matplotlib is heavy)."""
    from amdfleet.campaign.report import write_report

    return write_report


class PlainLog:
    """One line per event, for CI logs."""

    def __init__(self, campaign: Campaign, directory: Path) -> None:
        self.campaign = campaign
        state = load_state(directory)
        self.durations = [s for v in state.variants.values() for s in v.point_seconds]
        self.done = sum(len(v.points) for v in state.variants.values())
        self.total = len(campaign.points()) * len(campaign.variants)
        self.setups: list[float] = []
        self.setups_left = sum(1 for v in campaign.variants if not state.variant(v.label).finished)
        self._up_started: dict[str, float] = {}
        self.start = time.monotonic()
        self.current = ""

    def event(self, record: dict[str, Any]) -> None:
        """Print one line for a journal event."""
        kind, label = record["event"], record.get("variant", "")
        if kind == "point_done":
            self.durations.append(float(record.get("seconds") or 0))
            self.done += 1
        elif kind == "variant_up_started":
            self._up_started[label] = time.monotonic()
        elif kind == "variant_up_done" and label in self._up_started:
            self.setups.append(time.monotonic() - self._up_started.pop(label))
            self.setups_left -= 1
        self._echo(_describe_event(record) + self._clock())

    def point_started(self, label: str, name: str, index: int, total: int) -> None:
        """Print which point begins."""
        self.current = f"{label} {name} ({index}/{total})"
        self._echo(f"point {self.current} started{self._clock()}")

    def message(self, text: str) -> None:
        """Print a line for the user."""
        self._echo(text)

    def close(self) -> None:
        """Nothing to clean up."""

    def _clock(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = eta_seconds(self.durations, self.total - self.done, self.setups, self.setups_left)
        eta_text = "?" if eta is None else _duration(eta)
        return f"  [elapsed {_duration(elapsed)}, points {self.done}/{self.total}, eta {eta_text}]"

    def _echo(self, text: str) -> None:
        click.echo(text)


class LiveView(PlainLog):
    """Event lines plus a status line redrawn every second: which variant and point,
    elapsed time and ETA."""

    def __init__(self, campaign: Campaign, directory: Path) -> None:
        super().__init__(campaign, directory)
        self._stop = threading.Event()
        self._lock = threading.RLock()  # the Ctrl-C handler prints on the main thread
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def close(self) -> None:
        """Stop redrawing and clear the status line."""
        self._stop.set()
        with self._lock:
            click.echo("\r\033[K", nl=False)

    def _echo(self, text: str) -> None:
        with self._lock:
            click.echo("\r\033[K" + text)
            self._draw()

    def _draw(self) -> None:
        line = f"▶ {self.current or 'starting'}{self._clock()}"
        click.echo("\r\033[K" + click.style(line, bold=True), nl=False)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()


def _describe_event(record: dict[str, Any]) -> str:
    kind = record["event"]
    label = record.get("variant", "")
    if kind == "point_done":
        r = record["result"]
        return (
            f"{label}: {record['sweep']} load {record['load']} done — "
            f"{r.get('completed')}/{r.get('num_prompts')} ok, "
            f"{r.get('output_throughput', 0):.1f} out tok/s, median TTFT "
            f"{r.get('median_ttft_ms', 0):.0f} ms"
        )
    if kind == "variant_failed":
        return f"{label}: FAILED — {record.get('error')}"
    if kind == "interrupted":
        return f"{label}: interrupted at {record.get('where')}"
    if kind == "accuracy_done":
        r = record["result"]
        return f"{label}: accuracy {r['task']} flexible {r['flexible_extract']:.3f} (n={r['n']})"
    stack = f" ({record['stack']})" if record.get("stack") else ""
    return f"{label + ': ' if label else ''}{kind.replace('_', ' ')}{stack}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


COMMANDS = [campaign_group]
