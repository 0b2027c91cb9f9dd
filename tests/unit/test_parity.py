"""The output-parity check's logic: references read and refused, prompts compared token
for token, the verdict row, and a verification that stops when parity fails.

The endpoint is tests/support/openai_server.py, a real HTTP server scripted to return
chosen token ids (``choices[].token_ids``, as vLLM 0.32 does with ``return_token_ids``):
a real engine cannot be made to compute chosen wrong tokens on demand. The same check
against vLLM serving a real model, a corrupted copy and the wrong dtype is in
tests/e2e/test_parity_engines.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from amdfleet.cli import main
from amdfleet.config import (
    STACKS_DIR,
    BenchmarkScenario,
    ParitySpec,
    Thresholds,
    VerificationSpec,
    parse_stack,
)
from amdfleet.findings import Finding
from amdfleet.plan import plan
from amdfleet.plan.models import VerificationInput
from amdfleet.plan.planner import PROJECT_DIR
from amdfleet.plan.verification import parity_input, verification_input
from amdfleet.verify.parity import ParityReference, ParityReferenceError, PromptParity, prompt_set
from amdfleet.verify.reference import load_reference
from amdfleet.verify.run import run_verification
from tests.support.openai_server import OpenAIServer, Script

PROMPT_IDS = {"a": [10, 11], "b": [20, 21], "c": [30, 31], "d": [40, 41]}
CONTINUATIONS = {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11, 2], "d": [12, 13, 14, 15]}
EOS = 2


def write_reference(path: Path, **changes: Any) -> Path:
    document: dict[str, Any] = {
        "format": 1,
        "model": "org/model",
        "revision": "abc123",
        "recorded_by": "a known-good deployment",
        "recorded_at": "2026-12-07",
        "max_tokens": 4,
        "eos_token_ids": [EOS],
        "dtypes": ["float32"],
        "prompts": [
            {
                "prompt": name,
                "prompt_ids": PROMPT_IDS[name],
                "continuations": {"float32": CONTINUATIONS[name]},
            }
            for name in PROMPT_IDS
        ],
    }
    document.update(changes)
    path.write_text(json.dumps(document))
    return path


def engine(wrong: frozenset[str] | set[str] = frozenset(), eos_at_end: bool = False) -> Script:
    """Answers each reference prompt (sent as ids) with its continuation, or a wrong one
    from position 2 on for the prompts in ``wrong``."""

    def ids(prompt: Any) -> list[int]:
        name = next(n for n, p in PROMPT_IDS.items() if p == prompt)
        out = list(CONTINUATIONS[name])
        if name in wrong:
            out[2:] = [99, 99]
        return out + ([EOS] if eos_at_end else [])

    return Script(token_ids=ids)


def spec(reference: Path, **parity: Any) -> VerificationInput:
    section = VerificationSpec(
        parity=ParitySpec(
            **{"reference": str(reference), "dtype": "float32", "tokens": 4, **parity}
        ),
        scenarios=(
            BenchmarkScenario(
                name="c2",
                dataset="prompts",
                dataset_path=str(_prompts_file(reference.parent)),
                output_len=4,
                num_prompts=4,
            ),
        ),
        thresholds=Thresholds(min_success_rate=1.0),
    )
    assert section.parity is not None
    planned = parity_input(
        section.parity, reference=section.parity.reference, dtype=section.parity.dtype
    )
    return verification_input(section, planned)


def _prompts_file(directory: Path) -> Path:
    path = directory / "prompts.txt"
    path.write_text("one\ntwo\n")
    return path


def test_the_committed_prompt_set_is_what_references_record() -> None:
    prompts = prompt_set()
    assert len(prompts.prompts) == 8 and len(set(prompts.prompts)) == 8
    assert prompts.max_tokens == 16


def test_a_prompt_matches_only_token_for_token() -> None:
    same = PromptParity(0, "p", (1, 2, 3), (1, 2, 3))
    assert same.matched and same.diverged_at is None
    assert PromptParity(0, "p", (1, 2, 3), (1, 5, 3)).diverged_at == 1
    assert PromptParity(0, "p", (1, 2, 3), (1, 2)).diverged_at == 2  # stopped early
    failed = PromptParity(0, "p", (1, 2, 3), None, error="timeout")
    assert not failed.matched and failed.diverged_at == 0


def test_a_matching_engine_passes_and_the_benchmarks_run(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "ref.json")
    with OpenAIServer(engine(eos_at_end=True)) as server:
        result = run_verification(spec(reference), base_url=server.url, tokenizer=None)
    assert result.parity is not None and result.parity.share == 1.0
    row = result.rows[0]
    assert (row.scope, row.metric, row.passed, row.expected) == (
        "parity",
        "match_share",
        True,
        ">= 1",
    )
    assert [run.scenario.name for run in result.runs] == ["c2"]
    assert result.passed and not result.stopped
    sent = [b for b in server.bodies if b.get("return_token_ids")]
    assert sorted(b["prompt"] for b in sent) == sorted(PROMPT_IDS.values())  # ids, not text
    assert all(b["temperature"] == 0 and b["max_tokens"] == 4 for b in sent)


def test_a_wrong_engine_fails_and_nothing_else_runs(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "ref.json")
    with OpenAIServer(engine(wrong={"a", "c"})) as server:
        result = run_verification(
            spec(reference, min_match=0.75), base_url=server.url, out_dir=tmp_path / "out"
        )
        sent = server.received
    assert result.parity is not None and result.parity.share == 0.5
    assert not result.passed and result.runs == () and result.accuracy is None
    assert sent == 4  # the parity prompts only: no benchmark request
    assert result.failures() == [Finding.threshold("parity/match_share", ">= 0.75", "0.5")]
    diverged = {p.prompt: p.diverged_at for p in result.parity.prompts}
    assert diverged == {"a": 2, "b": None, "c": 2, "d": None}
    report = (tmp_path / "out/verification.md").read_text()
    assert "output parity failed" in report and "| 0 | a | **differ** | 2 |" in report
    saved = json.loads((tmp_path / "out/verification.json").read_text())
    assert saved["parity"]["matched"] == 2 and saved["parity"]["reference"]["revision"] == "abc123"


def test_only_the_first_k_tokens_are_compared(tmp_path: Path) -> None:
    """Prompts that differ from position 2 on match when only 2 tokens are compared."""
    reference = write_reference(tmp_path / "ref.json")
    with OpenAIServer(engine(wrong={"a", "b", "c", "d"})) as server:
        short = run_verification(spec(reference, tokens=2), base_url=server.url)
    assert short.parity is not None and short.parity.share == 1.0


def test_an_engine_that_returns_no_token_ids_fails_saying_so(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "ref.json")
    with OpenAIServer(Script()) as server:
        result = run_verification(spec(reference), base_url=server.url)
    assert result.parity is not None and result.parity.share == 0
    assert "returned no generated token ids" in result.parity.prompts[0].error


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "verification.parity.reference: parity reference .*ref.json: No such file"),
        ("not json", "is not a reference amdfleet wrote"),
        ({"format": 2}, r"format 2, expected 1"),
        ({"dtypes": ["bfloat16"]}, "holds bfloat16 continuations, not float32"),
    ],
)
def test_a_bad_reference_is_refused_before_anything_is_sent(
    tmp_path: Path, write: Any, message: str
) -> None:
    path = tmp_path / "ref.json"
    if isinstance(write, str):
        path.write_text(write)
    elif write is not None:
        write_reference(path)
        document = json.loads(path.read_text())
        document.update(write)
        if "dtypes" in write:
            for item in document["prompts"]:
                item["continuations"] = {"bfloat16": [1]}
        path.write_text(json.dumps(document))
    parity = spec(path).parity
    assert parity is not None
    with pytest.raises(ParityReferenceError, match=message) as caught:
        load_reference(parity)
    assert caught.value.hint  # says how to get a good one


def test_tokens_beyond_the_recorded_ones_are_refused(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "ref.json", max_tokens=2)
    with (
        OpenAIServer(engine()) as server,
        pytest.raises(ParityReferenceError, match="recorded 2 tokens per prompt"),
    ):
        run_verification(spec(reference), base_url=server.url)


def test_reference_records_who_made_it(tmp_path: Path) -> None:
    reference = ParityReference.load(write_reference(tmp_path / "ref.json"))
    described = reference.describe()
    assert described["model"] == "org/model" and described["revision"] == "abc123"
    assert len(described["sha256"]) == 64


def _local_stack_with(tmp_path: Path, parity: dict[str, Any]) -> Path:
    """The committed local stack with its verification cut to the parity check and one
    small scenario, and ``parity`` as its parity block."""
    document = yaml.safe_load((STACKS_DIR / "Pulumi.local.yaml").read_text())
    document["config"]["amdfleet:verification"] = {
        "parity": parity,
        "scenarios": [
            {
                "name": "c2",
                "dataset": "prompts",
                "dataset_path": str(_prompts_file(tmp_path)),
                "num_prompts": 2,
                "output_len": 2,
            }
        ],
        "thresholds": {"min_success_rate": 1.0},
    }
    path = tmp_path / "Pulumi.parity.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_verify_compares_in_the_dtype_the_stack_serves(tmp_path: Path) -> None:
    """`amdfleet verify STACK`: the plan resolves the parity block (float32, what the local
    stack serves on a CPU), so the float32 continuations are the ones compared."""
    reference = write_reference(tmp_path / "ref.json")
    stack = _local_stack_with(tmp_path, {"reference": str(reference), "tokens": 4})
    with OpenAIServer(engine()) as server:
        result = CliRunner().invoke(
            main, ["verify", str(stack), "--url", server.url, "--out", str(tmp_path / "o")]
        )
    assert result.exit_code == 0, result.output
    assert "4/4 prompts match the reference over their first 4 tokens (float32;" in result.output
    saved = json.loads((tmp_path / "o/verification.json").read_text())
    assert saved["parity"]["dtype"] == "float32" and saved["passed"] is True


def test_a_relative_reference_is_the_project_directory_s() -> None:
    sections = yaml.safe_load((STACKS_DIR / "Pulumi.local.yaml").read_text())["config"]
    found = {key.removeprefix("amdfleet:"): value for key, value in sections.items()}
    found["verification"]["parity"]["reference"] = "stacks/references/local.json"
    resolved = plan(parse_stack("local", found))
    parity = resolved.verification.input.parity
    assert parity is not None and parity.reference == str(
        PROJECT_DIR / "stacks/references/local.json"
    )
    assert STACKS_DIR.parent == PROJECT_DIR


def test_plan_refuses_a_stack_whose_reference_is_missing(tmp_path: Path) -> None:
    stack = _local_stack_with(tmp_path, {"reference": str(tmp_path / "never-recorded.json")})
    result = CliRunner().invoke(main, ["plan", str(stack)])
    assert result.exit_code != 0
    assert "- verification.parity.reference: parity reference" in result.output
    assert "never-recorded.json: No such file" in result.output
    assert "amdfleet parity record" in result.output  # how to get one
