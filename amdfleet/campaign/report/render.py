"""The report rendered: its tables (sweeps, seeds, accuracy, reproducibility) as
markdown and as one self-contained HTML page, with the plots linked or embedded."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from amdfleet.campaign.report.data import Report, Table, fmt, fmt_ratio
from amdfleet.campaign.report.plots import PLOTS
from amdfleet.campaign.results import CampaignResults, parse_load
from amdfleet.tables import table


def build_tables(results: CampaignResults, data: Mapping[str, Any]) -> list[Table]:
    """The report's tables in order: sweeps, seeds, accuracy, reproducibility."""
    labels = [v.label for v in results.variants]
    base = results.baseline
    out = [_sweep_table(s, labels, str(base)) for s in data["sweeps"]]
    if data["seeds"]:
        out.append(
            Table(
                "Seed references",
                (
                    "seed",
                    "source",
                    "hardware",
                    "variant",
                    "concurrency",
                    "metric",
                    "published",
                    "observed",
                    "observed / published",
                ),
                [
                    (
                        r["baseline"],
                        r["source"],
                        r["hardware"],
                        r["variant"],
                        fmt(r["concurrency"]),
                        r["metric"],
                        fmt(r["published"]),
                        fmt(r["observed"]),
                        fmt_ratio(r["ratio"]),
                    )
                    for r in data["seeds"]
                ],
                ("left",) * 4 + ("right", "left", "right", "right", "right"),
                "Observed is the variant's point at the seed's concurrency (empty: the "
                "campaign did not measure that concurrency).",
            )
        )
    if data["accuracy"]:
        out.append(
            Table(
                "Accuracy (GSM8K, 5-shot)",
                (
                    "variant",
                    "n",
                    "flexible-extract",
                    "± stderr",
                    "strict-match",
                    "± stderr",
                    "seed",
                    "seed flexible",
                    "seed strict",
                ),
                [
                    (
                        r["variant"],
                        fmt(r["n"]),
                        fmt(r["flexible_extract"], 4),
                        fmt(r["flexible_extract_stderr"], 4),
                        fmt(r["strict_match"], 4),
                        fmt(r["strict_match_stderr"], 4),
                        f"{r['seed']} ({r['seed_source']})" if r["seed"] else "",
                        fmt(r["seed_flexible_extract"], 4),
                        fmt(r["seed_strict_match"], 4),
                    )
                    for r in data["accuracy"]
                ],
                ("left", "right", "right", "right", "right", "right", "left", "right", "right"),
            )
        )
    out.extend(_reproducibility_tables(data["reproducibility"]))
    return out


def render_markdown(results: CampaignResults, report: Report) -> str:
    """The report as markdown: summary, plots (or why they are skipped), tables."""
    lines = [f"# Campaign {results.campaign}", ""]
    lines += _summary(results)
    lines += ["", "## Plots", ""]
    for name in PLOTS:
        if name in report.plots:
            lines += [f"![{name}]({name})", ""]
        else:
            lines += [f"- `{name}` skipped: {report.skipped.get(name, 'no data')}", ""]
    for t in report.tables:
        lines += [f"## {t.title}", ""]
        lines += [table(t.headers, t.rows, align=t.align, style="markdown"), ""]
        if t.note:
            lines += [t.note, ""]
    for note in _seed_notes(report.data):
        lines += [f"- {note}"]
    return "\n".join(lines).rstrip() + "\n"


def render_html(results: CampaignResults, report: Report) -> str:
    """The same report as one HTML page: PNGs embedded as data URIs, no external links."""
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Campaign {esc(str(results.campaign))}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:2px 6px}td.r{text-align:right}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Campaign {esc(str(results.campaign))}</h1>",
        "<ul>" + "".join(f"<li>{esc(s.lstrip('- '))}</li>" for s in _summary(results)) + "</ul>",
        "<h2>Plots</h2>",
    ]
    for name in PLOTS:
        if name in report.plots:
            data = base64.b64encode(report.plots[name].read_bytes()).decode("ascii")
            parts.append(f'<p><img alt="{name}" src="data:image/png;base64,{data}"></p>')
        else:
            parts.append(f"<p><code>{name}</code> skipped: {esc(report.skipped[name])}</p>")
    for t in report.tables:
        parts.append(f"<h2>{esc(t.title)}</h2>")
        parts.append(_html_table(t))
        if t.note:
            parts.append(f"<p>{esc(t.note)}</p>")
    notes = _seed_notes(report.data)
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _sweep_table(sweep: Mapping[str, Any], labels: Sequence[str], base: str) -> Table:
    kind = sweep["kind"]
    load_name = "concurrency" if kind == "concurrency" else "req/s"
    present = [lab for lab in labels if any(r["variant"] == lab for r in sweep["rows"])]
    ratio = base in present
    headers = [load_name]
    for lab in present:
        headers += [
            f"{lab} out tok/s",
            *([f"{lab} ×{base}"] if ratio else []),
            f"{lab} p99 TTFT ms",
            f"{lab} p99 TPOT ms",
            f"{lab} failed",
        ]
    by_load: dict[float, dict[str, Mapping[str, Any]]] = {}
    for r in sweep["rows"]:
        by_load.setdefault(parse_load(r["load"]), {})[r["variant"]] = r
    rows = []
    for load in sorted(by_load):
        row: list[object] = [fmt(load)]
        for lab in present:
            r = by_load[load].get(lab)
            if r is None:
                row += [""] * (5 if ratio else 4)
                continue
            row += [
                fmt(r["output_throughput"]),
                *([fmt_ratio(r["ratio_to_baseline"])] if ratio else []),
                fmt(r["p99_ttft_ms"]),
                fmt(r["p99_tpot_ms"]),
                _failed(r),
            ]
        rows.append(row)
    return Table(
        f"Sweep {sweep['name']} ({kind.replace('_', ' ')})",
        headers,
        rows,
        ["right"] * len(headers),
        f"×{base}: output tok/s divided by {base}'s at the same load." if ratio else "",
    )


def _failed(row: Mapping[str, Any]) -> str:
    reasons = row["failure_reasons"]
    if not reasons:
        return str(row["failed"])
    return f"{row['failed']} ({', '.join(f'{k}: {n}' for k, n in reasons.items())})"


def _reproducibility_tables(data: Mapping[str, Any]) -> list[Table]:
    machine = data["machine"]
    campaign = Table(
        "Reproducibility: campaign",
        ("field", "value"),
        [
            ("campaign file", data["file"]),
            ("machine", ", ".join(f"{k}={v}" for k, v in machine.items())),
            ("started", data["started_at"]),
            ("finished", data["finished_at"]),
            ("teardown", data["teardown"]),
        ],
        ("left", "left"),
    )
    variants = Table(
        "Reproducibility: variants",
        (
            "variant",
            "stack",
            "status",
            "overrides",
            "engine",
            "model",
            "precision",
            "accelerator × GPUs",
            "image (the digest that ran)",
            "from",
            "image digests",
        ),
        [
            (
                v["label"],
                v["stack"],
                v["status"] + (f": {v['error']}" if v["error"] else ""),
                json.dumps(v["overrides"], sort_keys=True),
                v["engine"],
                v["model"],
                v["precision"],
                f"{v['accelerator']} × {v['gpus']}",
                v["image"] or "",
                v["image_source"] or "",
                " ".join(v["image_digests"]),
            )
            for v in data["variants"]
        ],
        ("left",) * 11,
    )
    hosts = Table(
        "Reproducibility: hosts",
        ("variant", "name", "address", "hostname", "GPUs", "ROCm", "OS", "kernel"),
        [
            (
                v["label"],
                h["name"],
                h["address"],
                h["hostname"],
                f"{h['gpus']} {'/'.join(h['gpu_models'])}".strip(),
                h["rocm_version"],
                h["os"],
                h["kernel"],
            )
            for v in data["variants"]
            for h in v["hosts"]
        ],
        ("left",) * 8,
    )
    return [campaign, variants, hosts]


def _summary(results: CampaignResults) -> list[str]:
    lines = []
    if results.description:
        lines.append(f"- {results.description}")
    lines.append(f"- baseline variant: {results.baseline}")
    for v in results.variants:
        status = f"{v.status}" + (f" ({v.error})" if v.error else "")
        lines.append(
            f"- {v.label}: {v.engine} {v.model} {v.precision} on "
            f"{v.gpus}× {v.accelerator}, {len(v.points)} points, {status}"
        )
    return lines


def _seed_notes(data: Mapping[str, Any]) -> list[str]:
    notes = [
        f"Seed {s} publishes no numbers the report can place (seed 001 shows charts only)"
        if s == "001"
        else f"Seed {s} has no baselines in amdfleet.catalog.baselines"
        for s in data["seeds_without_numbers"]
    ]
    by_note: dict[str, list[str]] = {}
    for r in data["seeds"]:
        if r["note"] and r["baseline"] not in by_note.setdefault(r["note"], []):
            by_note[r["note"]].append(r["baseline"])
    notes += [f"{', '.join(ids)}: {note}" for note, ids in by_note.items()]
    return notes


def _html_table(t: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in t.headers)
    body = []
    for row in t.rows:
        cells = "".join(
            f"<td{' class=r' if a == 'right' else ''}>{esc('' if c is None else str(c))}</td>"
            for c, a in zip(row, t.align, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
