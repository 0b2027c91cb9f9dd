"""Campaign files, the journal and its replay, results.json, ETA and stack names.

Every committed campaign loads and plans; each file in ``bad_campaigns/`` states the
field path its error must name (``expect-path``) and text the error must contain
(``expect-text``), as the bad-stack corpus does.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from amdfleet.campaign.journal import Journal, read_events, replay
from amdfleet.campaign.results import build_results
from amdfleet.campaign.runner import eta_seconds, stack_secrets
from amdfleet.campaign.spec import VariantSpec, load_campaign, resolve_variant, stack_name
from amdfleet.cli import COMMANDS
from amdfleet.cli.campaign import PlainLog, status_rows
from amdfleet.config import parse_stack
from amdfleet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "campaigns").glob("*.yaml"))
BAD = sorted((Path(__file__).parent / "bad_campaigns").glob("bad-*.yaml"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_campaign_loads_and_every_variant_plans(path: Path) -> None:
    campaign = load_campaign(path)
    assert campaign.name == path.stem
    assert campaign.spec.teardown == "always"
    assert len(campaign.variants) >= 2 and campaign.points()
    for variant in campaign.variants:
        assert variant.stack.name == f"{campaign.name}-{variant.label}"


def test_the_committed_examples_are_the_ones_the_issue_asks_for() -> None:
    seed001 = load_campaign(ROOT / "campaigns/seed001-vllm-vs-tgi.yaml")
    assert [v.stack.engine.name for v in seed001.variants] == ["vllm", "tgi"]
    assert seed001.spec.seeds == ("001",)
    assert {s.kind for s in seed001.spec.sweeps} == {"concurrency", "request_rate"}
    rps = next(s for s in seed001.spec.sweeps if s.kind == "request_rate")
    assert [rps.scenario(r).num_prompts for r in rps.values] == [30, 60, 90, 120, 150]
    seed002 = load_campaign(ROOT / "campaigns/seed002-fp8-vs-mxfp4.yaml")
    assert [v.stack.model.precision for v in seed002.variants] == ["fp8", "mxfp4"]
    local = load_campaign(ROOT / "campaigns/local-max-num-seqs.yaml")
    assert [v.stack.serving.max_num_seqs for v in local.variants] == [4, 16]
    # the overrides merge into the stack: everything else is the local stack's
    assert local.variants[0].stack.model == local.variants[1].stack.model
    assert local.variants[0].fleet_key == local.variants[1].fleet_key  # same machine


def _expectations(path: Path) -> tuple[str, str]:
    header = path.read_text()
    field = re.search(r"^# expect-path: (.+)$", header, re.MULTILINE)
    text = re.search(r"^# expect-text: (.+)$", header, re.MULTILINE)
    assert field and text, f"{path.name} lacks expect-path/expect-text lines"
    return field.group(1).strip(), text.group(1).strip()


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_campaign_is_rejected_naming_field_and_fix(path: Path) -> None:
    field, text = _expectations(path)
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    error = caught.value
    assert field in error.paths, f"expected an issue at {field!r}, got {error.paths}"
    issue = next(i for i in error.issues if i.subject == field)
    assert text in f"{issue.detail} {issue.hint}", str(error)
    assert issue.hint
    assert str(error).startswith(f"invalid campaign file in {path}")
    assert len(error.issues) == 1, str(error)  # no echo issues of the same mistake


def test_sweep_points_become_benchmark_scenarios(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "variants: [{label: a, stack: local}]\n"
        "sweeps:\n"
        "  - {name: conc, kind: concurrency, values: [2, 8], prompts_per_point: 4,"
        " input_len: 64, output_len: 16}\n"
        "  - {name: rate, kind: request_rate, values: [0.5, inf], num_prompts: 10}\n"
    )
    campaign = load_campaign(path)
    conc, rate = campaign.spec.sweeps
    c8 = conc.scenario(8)
    assert (c8.name, c8.max_concurrency, c8.num_prompts, c8.request_rate) == ("conc-8", 8, 32, None)
    assert (c8.input_len, c8.output_len) == (64, 16)
    half, inf = rate.scenario(0.5), rate.scenario(math.inf)
    assert (half.name, half.request_rate, half.max_concurrency) == ("rate-0p5", 0.5, None)
    assert (inf.name, inf.request_rate, inf.num_prompts) == ("rate-inf", None, 10)
    assert [(s.name, load) for s, load in campaign.points()] == [
        ("conc", 2),
        ("conc", 8),
        ("rate", 0.5),
        ("rate", math.inf),
    ]


@pytest.mark.parametrize(
    ("campaign", "label", "expected"),
    [
        ("local-max-num-seqs", "seqs4", "local-max-num-seqs-seqs4"),
        ("Seed_001 VLLM", "tgi", "seed-001-vllm-tgi"),
        ("x" * 80, "fp8", "x" * 59 + "-fp8"),
    ],
)
def test_stack_names_are_valid_stack_names(campaign: str, label: str, expected: str) -> None:
    name = stack_name(campaign, label)
    assert name == expected and len(name) <= 63
    assert parse_stack  # the stack schema's own pattern accepts it:
    assert re.fullmatch(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name)


@pytest.mark.parametrize(
    ("durations", "remaining", "expected"),
    [([], 3, None), ([10.0, 20.0], 3, 45.0), ([5.0], 0, 0.0), ([4.0, 4.0, 7.0], 1, 5.0)],
)
def test_eta_is_the_mean_point_duration_times_points_left(
    durations: list[float], remaining: int, expected: float | None
) -> None:
    assert eta_seconds(durations, remaining) == expected


def test_eta_adds_the_mean_bring_up_time_of_the_variants_left() -> None:
    assert eta_seconds([2.0, 4.0], 4, [90.0, 110.0], 1) == 3.0 * 4 + 100.0
    assert eta_seconds([2.0], 2, [], 1) is None  # no up measured yet
    assert eta_seconds([], 0, [60.0], 0) == 0.0


def _point(journal: Journal, label: str, load: str, seconds: float) -> None:
    journal.write(
        "point_done",
        variant=label,
        stack=f"c-{label}",
        sweep="conc",
        kind="concurrency",
        load=load,
        seconds=seconds,
        result={"completed": 8, "num_prompts": 8, "output_throughput": 1.5, "max_concurrency": 2},
    )


def test_replay_folds_the_journal_and_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.write("campaign_started", file="c.yaml", machine={"cpus": 2})
    journal.write("variant_up_started", variant="seqs4", stack="c-seqs4")
    outputs = {"endpoint": "http://127.0.0.1:18000/v1", "campaign": {"expires_at": "2030-01-01"}}
    journal.write("variant_up_done", variant="seqs4", stack="c-seqs4", outputs=outputs)
    _point(journal, "seqs4", "2", 10.0)
    journal.write("interrupted", variant="seqs4", stack="c-seqs4", where="seqs4: conc at 8")
    journal.write("destroy_started", variant="seqs4", stack="c-seqs4")
    with path.open("a") as f:  # a crash in the middle of writing destroy_done
        f.write('{"ts": "2026-11-28T16:00:00+00:00", "event": "destroy_do')
    assert [e["event"] for e in read_events(path)][-1] == "destroy_started"
    state = replay(path)
    seqs4 = state.variant("seqs4")
    assert seqs4.status == "interrupted" and seqs4.may_be_up  # destroy never finished
    assert list(seqs4.points) == [("conc", "2")] and seqs4.point_seconds == [10.0]
    assert state.interrupted is not None and state.interrupted["where"] == "seqs4: conc at 8"
    assert state.variant("seqs16").status == "pending"


def test_a_corrupt_line_before_the_end_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "campaign_started", "ts": "x"}\nnot json\n{"event": "x"}\n')
    with pytest.raises(ValueError, match=r"journal\.jsonl:2"):
        read_events(path)


def test_resume_state_and_results_json_follow_the_contract(tmp_path: Path) -> None:
    campaign = load_campaign(ROOT / "campaigns/local-max-num-seqs.yaml")
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.write("campaign_started", file="c.yaml", machine={"cpus": 2})
    for label in ("seqs4", "seqs16"):
        stack = f"local-max-num-seqs-{label}"
        journal.write("variant_up_started", variant=label, stack=stack)
        outputs = {"endpoint": "http://127.0.0.1:18000/v1", "engine": {"image": None}}
        journal.write("variant_up_done", variant=label, stack=stack, outputs=outputs)
        _point(journal, label, "8", 4.0)  # out of order on purpose
        _point(journal, label, "2", 3.0)
        accuracy = {"task": "gsm8k", "limit": 8, "n": 8, "flexible_extract": 0.0}
        journal.write("accuracy_done", variant=label, stack=stack, result=accuracy)
        journal.write("variant_done", variant=label, stack=stack)
        journal.write("destroy_started", variant=label, stack=stack)
        journal.write("destroy_done", variant=label, stack=stack)
    journal.write("campaign_done")
    state = replay(path)
    results = json.loads(json.dumps(build_results(campaign, state).to_json()))
    assert results["schema"] == 1 and results["campaign"] == "local-max-num-seqs"
    assert results["baseline"] == "seqs4" and results["teardown"] == "always"
    assert results["finished_at"] is not None and results["machine"] == {"cpus": 2}
    for variant in results["variants"]:
        assert variant["status"] == "done"
        assert [(p["sweep"], p["sweep_name"], p["load"]) for p in variant["points"]] == [
            ("concurrency", "conc", 2),
            ("concurrency", "conc", 8),
        ]
        assert variant["points"][0]["output_throughput"] == 1.5
        assert variant["accuracy"]["task"] == "gsm8k"
        assert (variant["engine"], variant["gpus"], variant["accelerator"]) == ("vllm", 1, "cpu")
    assert results["variants"][1]["overrides"] == {"serving": {"max_num_seqs": 16}}
    rows = status_rows(campaign, state)
    assert [(r["state"], r["points_done"], r["points_total"], r["may_be_up"]) for r in rows] == [
        ("done", 2, 2, False),
        ("done", 2, 2, False),
    ]


def test_campaign_command_is_registered() -> None:
    assert COMMANDS["campaign"].module == "amdfleet.cli.campaign"


def test_secrets_come_from_the_environment_and_a_missing_api_key_is_generated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overrides = {"weights": {"hf_token_secret": "hfToken"}}
    variant = resolve_variant("c", VariantSpec(label="a", stack="local", overrides=overrides))
    monkeypatch.delenv("AMDFLEET_SECRET_APIKEY", raising=False)
    monkeypatch.delenv("AMDFLEET_SECRET_HFTOKEN", raising=False)
    with pytest.raises(ConfigError) as caught:
        stack_secrets(variant)
    assert caught.value.paths == ("secrets.hfToken",)
    assert "AMDFLEET_SECRET_HFTOKEN is not set" in str(caught.value)
    monkeypatch.setenv("AMDFLEET_SECRET_HFTOKEN", "hf_x")
    first, second = stack_secrets(variant), stack_secrets(variant)
    assert first["hfToken"] == "hf_x" and len(first["apiKey"]) == 48
    assert first["apiKey"] != second["apiKey"]  # generated, not a constant
    assert stack_secrets(variant, {"apiKey"}) == {
        "hfToken": "hf_x"
    }  # a resumed stack keeps its key
    monkeypatch.setenv("AMDFLEET_SECRET_APIKEY", "given")
    assert stack_secrets(variant, {"apiKey"})["apiKey"] == "given"


def test_plain_progress_prints_one_line_per_event_with_points_and_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    campaign = load_campaign(ROOT / "campaigns/local-max-num-seqs.yaml")
    log = PlainLog(campaign, tmp_path)
    log.event({"event": "variant_up_started", "variant": "seqs4", "stack": "s"})
    log.event({"event": "variant_up_done", "variant": "seqs4", "stack": "s"})
    log.point_started("seqs4", "conc@2", 1, 2)
    result = {"completed": 16, "num_prompts": 16, "output_throughput": 178.2, "median_ttft_ms": 34}
    log.event(
        {
            "event": "point_done",
            "variant": "seqs4",
            "sweep": "conc",
            "load": "2",
            "seconds": 2.0,
            "result": result,
        }
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("seqs4: variant up started (s)")
    assert lines[2].startswith("point seqs4 conc@2 (1/2) started")
    assert lines[3].startswith("seqs4: conc load 2 done — 16/16 ok, 178.2 out tok/s")
    assert "points 1/4" in lines[3]
    # 3 points at 2 s, plus one more bring-up like the first (measured in ms here)
    assert lines[3].endswith("eta 0:06]")
