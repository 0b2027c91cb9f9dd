"""Output parity against real engines: vLLM's CPU build serving SmolLM2-135M-Instruct
(built by scripts/build-smollm2) as the ``local`` stack does, then broken in the two ways
that matter on a new image — a corrupted shard, and the wrong dtype.

- float32, the intact checkpoint: the parity check passes against transformers'
  reference (``amdfleet parity check``, the real CLI), and a reference recorded from this
  deployment (``amdfleet parity record``) is what a GPU stack keeps.
- float32, one MLP projection zeroed in a copy of the checkpoint (0.7% of its bytes, as
  a bad copy or disk would leave it): the engine still answers in fluent English and
  GSM8K cannot tell it apart (a 135 M model scores ~0 either way; measured 0/16 intact,
  1/16 broken), but parity fails, against both references.
- bfloat16: compared with the float32 reference it fails too (on a CPU without
  AVX-512 BF16 the output is nonsense; with it, the tokens still drift).

Each engine starts once (about 20 s here in eager mode, as the local stacks run it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from amdfleet.config import AccuracySpec, ParitySpec
from amdfleet.plan.verification import accuracy_input, parity_input
from amdfleet.verify.client import EndpointClient
from amdfleet.verify.gsm8k import run_gsm8k
from amdfleet.verify.parity import ParityReference
from amdfleet.verify.run import check_parity
from tests.e2e.vllm_server import (
    SHARED,
    SMOLLM2,
    VllmServer,
    VllmStartError,
    missing_parts,
    run_cli,
    running_vllm,
    zeroed_copy,
)

pytestmark = pytest.mark.vllm

REFERENCE = SMOLLM2 / "parity-reference.json"
ZEROED = "model.layers.12.mlp.down_proj.weight"
GATE = 0.75  # stacks/Pulumi.local.yaml's verification.parity.min_match
GSM8K = accuracy_input(
    AccuracySpec(limit=8, concurrency=8, max_tokens=64, data_path=str(SHARED / "datasets/gsm8k"))
)


def _serve(
    factory: pytest.TempPathFactory, name: str, model: Path, dtype: str
) -> Iterator[VllmServer]:
    missing = missing_parts() + ([] if REFERENCE.exists() else [str(REFERENCE)])
    if missing:
        pytest.fail(f"the parity tests need {', '.join(missing)}; run scripts/setup")
    try:
        # eager, as the local stacks serve it (engine.extra_args)
        work = factory.mktemp(name)
        with running_vllm(work, model=model, dtype=dtype, extra=("--enforce-eager",)) as server:
            yield server
    except VllmStartError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    yield from _serve(tmp_path_factory, "intact", SMOLLM2, "float32")


@pytest.fixture(scope="module")
def corrupted_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkpoint with one tensor's bytes zeroed (its header intact, so the
    engine loads it without a complaint)."""
    return zeroed_copy(SMOLLM2, tmp_path_factory.mktemp("corrupted") / "model", ZEROED)


@pytest.fixture(scope="module")
def recorded(intact: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference recorded from the intact deployment, as a GPU stack keeps one."""
    out = tmp_path_factory.mktemp("recorded") / "reference.json"
    done = run_cli(
        "parity", "record", intact.url, "--out", str(out), "--dtype", "float32",
        "--model-id", "HuggingFaceTB/SmolLM2-135M-Instruct", "--revision", "local-build",
        "--engine", "vllm 0.32.0 (CPU build), float32", "--eos-token-id", "2",
        api_key=intact.api_key,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return out


def _parity(server: VllmServer, reference: Path, dtype: str = "float32") -> float:
    section = ParitySpec(reference=str(reference), dtype=dtype, min_match=GATE)
    spec = parity_input(section, reference=section.reference, dtype=section.dtype)
    result = asyncio.run(
        check_parity(
            server.url,
            spec,
            ParityReference.load(reference),
            model=server.model,
            api_key=server.api_key,
        )
    )
    assert all(p.error == "" for p in result.prompts), [p.error for p in result.prompts]
    return result.share


def _gsm8k(server: VllmServer) -> float:
    async def score() -> float:
        async with EndpointClient(server.url, api_key=server.api_key, concurrency=8) as client:
            result = await run_gsm8k(client, GSM8K, model=server.model)
        assert result.failed == 0
        return result.flexible_extract.value

    return asyncio.run(score())


def test_the_intact_engine_passes_against_transformers_reference(intact: VllmServer) -> None:
    done = run_cli(
        "parity", "check", intact.url, "--reference", str(REFERENCE), "--dtype", "float32",
        "--min-match", str(GATE), api_key=intact.api_key,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "prompts match the reference over their first 16 tokens" in done.stdout
    assert "Paris" in done.stdout  # "The capital of France is" → " Paris. ..."


def test_a_recorded_reference_is_what_the_deployment_serves(
    intact: VllmServer, recorded: Path
) -> None:
    document = json.loads(recorded.read_text())
    assert document["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert document["recorded_by"] == "vllm 0.32.0 (CPU build), float32"
    assert all(p["prompt_ids"] for p in document["prompts"])  # as the engine tokenized them
    assert _parity(intact, recorded) == 1.0  # greedy decoding is deterministic


def test_a_corrupted_shard_fails_parity_where_gsm8k_does_not_notice(
    intact: VllmServer,
    recorded: Path,
    corrupted_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    intact_score = _gsm8k(intact)
    for broken in _serve(tmp_path_factory, "broken", corrupted_checkpoint, "float32"):
        assert _parity(broken, REFERENCE) < GATE
        assert _parity(broken, recorded) < GATE
        done = run_cli(
            "parity", "check", broken.url, "--reference", str(REFERENCE),
            "--dtype", "float32", "--min-match", str(GATE), api_key=broken.api_key,
        )  # fmt: skip
        assert done.returncode == 1 and "parity/match_share" in done.stdout + done.stderr
        # GSM8K, the other correctness signal, scores the broken engine no worse (to
        # within one question of 8): no GSM8K threshold would have caught it.
        assert _gsm8k(broken) >= intact_score - 1 / 8


def test_serving_in_bfloat16_fails_parity_against_the_float32_reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    for wrong in _serve(tmp_path_factory, "bf16", SMOLLM2, "bfloat16"):
        assert _parity(wrong, REFERENCE, dtype="float32") < GATE


def test_the_setup_reference_is_transformers_greedy_output() -> None:
    reference = ParityReference.load(REFERENCE)
    assert reference.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert reference.dtypes == ("float32", "bfloat16")
    assert reference.recorded_by.startswith("transformers ")
    assert len(reference.prompts) == 8 and reference.max_tokens == 16
    # its revision names the weights it was made from: the checkpoint the stack serves
    weights = hashlib.sha256((SMOLLM2 / "model.safetensors").read_bytes()).hexdigest()
    revision = hashlib.sha256(b"model.safetensors" + weights.encode()).hexdigest()[:40]
    assert reference.revision == f"sha256:{revision}"
