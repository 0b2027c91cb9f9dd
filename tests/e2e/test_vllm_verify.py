"""Benchmark, accuracy and verification through the CLI against a real vLLM (CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.e2e.vllm_server import SHARED, VllmServer, run_cli

pytestmark = pytest.mark.vllm

INPUT_LEN, OUTPUT_LEN, PROMPTS = 128, 32, 24


def test_bench_sweep_token_counts_and_consistency(vllm_server: VllmServer, tmp_path: Path) -> None:
    result = run_cli(
        "bench", vllm_server.url, "--input-len", str(INPUT_LEN), "--output-len", str(OUTPUT_LEN),
        "--num-prompts", str(PROMPTS), "--max-concurrency", "2", "--max-concurrency", "8",
        "--detailed", "--out", str(tmp_path),
        api_key=vllm_server.api_key,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("c2", "c8"):
        data = json.loads((tmp_path / f"bench-{name}.json").read_text())
        assert (data["completed"], data["failed"]) == (PROMPTS, 0), data["failure_reasons"]
        # token counts are the server's usage and equal what was asked for
        assert data["input_lens"] == [INPUT_LEN] * PROMPTS
        assert data["output_lens"] == [OUTPUT_LEN] * PROMPTS
        assert data["total_input_tokens"] == INPUT_LEN * PROMPTS
        assert data["total_output_tokens"] == OUTPUT_LEN * PROMPTS
        _check_consistent(data)
    for png in ("throughput.png", "ttft.png", "tpot_itl.png", "latency_p99.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert "| c8 | 8 | inf | 24 | 0 |" in (tmp_path / "summary.md").read_text()


def _check_consistent(data: dict) -> None:  # type: ignore[type-arg]
    duration = data["duration"]
    assert data["request_throughput"] == pytest.approx(data["completed"] / duration)
    assert data["output_throughput"] == pytest.approx(data["total_output_tokens"] / duration)
    total = data["total_input_tokens"] + data["total_output_tokens"]
    assert data["total_token_throughput"] == pytest.approx(total / duration)
    # per request: e2el = ttft + tpot * (n - 1), so the means obey the same identity
    assert data["mean_e2el_ms"] == pytest.approx(
        data["mean_ttft_ms"] + data["mean_tpot_ms"] * (OUTPUT_LEN - 1)
    )
    for latency, ttft, itls in zip(data["latencies"], data["ttfts"], data["itls"], strict=True):
        assert latency == pytest.approx(ttft + sum(itls))
        assert 1 <= len(itls) + 1 <= OUTPUT_LEN  # token events, a few tokens each at most
    pooled = [gap for itls in data["itls"] for gap in itls]
    assert data["mean_itl_ms"] == pytest.approx(np.mean(pooled) * 1000)
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert data[f"median_{metric}_ms"] <= data[f"p99_{metric}_ms"]
        assert data[f"p90_{metric}_ms"] <= data[f"p95_{metric}_ms"] <= data[f"p99_{metric}_ms"]
    assert duration >= max(data["latencies"])
    assert data["max_concurrent_requests"] >= 1
    assert data["max_output_tokens_per_s"] > 0


def test_chat_endpoint_at_a_request_rate(vllm_server: VllmServer, tmp_path: Path) -> None:
    result = run_cli(
        "bench", vllm_server.url, "--endpoint", "chat", "--input-len", "64", "--output-len", "16",
        "--num-prompts", "10", "--request-rate", "20", "--out", str(tmp_path),
        api_key=vllm_server.api_key,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "bench-r20.json").read_text())
    assert (data["completed"], data["total_output_tokens"]) == (10, 160)
    assert data["request_rate"] == 20.0 and data["backend"] == "openai-chat"
    # the chat template wraps the prompt: more tokens than the raw 64
    assert data["total_input_tokens"] > 64 * 10


def test_wrong_api_key_is_refused_cleanly(vllm_server: VllmServer) -> None:
    result = run_cli("bench", vllm_server.url, "--num-prompts", "1", api_key="wrong")
    assert result.returncode == 1
    assert "refused the API key" in result.stderr and "Traceback" not in result.stderr


def test_eval_gsm8k_through_the_cli(vllm_server: VllmServer, tmp_path: Path) -> None:
    result = run_cli(
        "eval", vllm_server.url, "--limit", "8", "--concurrency", "8",
        "--data-path", str(SHARED / "datasets" / "gsm8k"), "--out", str(tmp_path),
        api_key=vllm_server.api_key,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    scores = json.loads((tmp_path / "gsm8k.json").read_text())
    assert scores["samples"] == 8 and scores["failed_requests"] == 0
    samples = [
        json.loads(line) for line in (tmp_path / "gsm8k-samples.jsonl").read_text().splitlines()
    ]
    assert all(s["response"] and "Question:" not in s["response"] for s in samples)
    # random weights: the score is near zero, so rescore every response here with
    # lm-eval's gsm8k filters and metric (a second implementation) and compare
    test = (SHARED / "datasets" / "gsm8k" / "test.jsonl").read_text().splitlines()
    assert sorted(s["doc_id"] for s in samples) == list(range(8))  # --limit keeps the prefix
    for key in ("strict-match", "flexible-extract"):
        correct = []
        for s in samples:
            problem = json.loads(test[s["doc_id"]])
            assert s["target"] == problem["answer"]
            assert s["prompt"].endswith(f"Question: {problem['question']}\nAnswer:")
            extracted = _lm_eval_extract(key, s["response"])
            assert s[key] == extracted
            correct.append(_lm_eval_exact_match(extracted, problem["answer"]))
            assert s[f"exact_match,{key}"] == float(correct[-1])
        assert scores[f"exact_match,{key}"] == pytest.approx(np.mean(correct))
        stderr = np.std(correct, ddof=1) / np.sqrt(len(correct))  # lm-eval's mean_stderr
        assert scores[f"exact_match_stderr,{key}"] == pytest.approx(stderr)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in result.stdout.splitlines()]
    assert ["gsm8k", "3", "flexible-extract", "5", "exact_match"] in [row[:5] for row in rows]


def _lm_eval_extract(key: str, response: str) -> str:
    """lm-eval's gsm8k.yaml filters: RegexFilter then take_first."""
    if key == "strict-match":
        found = re.findall(r"#### (\-?[0-9\.\,]+)", response)
        match = found[0] if found else None
    else:  # flexible-extract: group_select -1, the first non-empty group of that match
        groups = re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", response)
        match = next((g for g in groups[-1] if g), None) if groups else None
    return match.strip() if match else "[invalid]"


def _lm_eval_exact_match(prediction: str, reference: str) -> bool:
    """exact_match with gsm8k.yaml's ignore_case and regexes_to_ignore."""

    def clean(text: str) -> str:
        for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"):
            text = re.sub(pattern, "", text)
        return text.lower()

    return clean(prediction) == clean(reference)


def _stack(tmp_path: Path, thresholds: dict[str, float]) -> Path:
    verification = {
        "scenarios": [
            {
                "name": "c4",
                "input_len": 128,
                "output_len": 16,
                "num_prompts": 8,
                "max_concurrency": 4,
            }
        ],
        "accuracy": {"limit": 4, "concurrency": 4, "data_path": str(SHARED / "datasets" / "gsm8k")},
        "thresholds": thresholds,
        "baseline": "seed002-mi355x-70b-fp8-8k1k-c64",
        "request_timeout_s": 120,
    }
    config = {
        "amdfleet:fleet": {"hosts": [{"name": "local", "connection": "local"}]},
        "amdfleet:topology": {"accelerator": "cpu", "gpus_per_node": 1},
        "amdfleet:model": {"id": "tiny-llama"},
        "amdfleet:verification": verification,
    }
    path = tmp_path / "Pulumi.tiny.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def test_verify_stack_passes_and_fails_on_thresholds(
    vllm_server: VllmServer, tmp_path: Path
) -> None:
    ok = _stack(
        tmp_path, {"min_success_rate": 1.0, "min_output_throughput": 1, "max_p99_ttft_ms": 60000}
    )
    result = run_cli(
        "verify",
        str(ok),
        "--url",
        vllm_server.url,
        "--out",
        str(tmp_path / "ok"),
        api_key=vllm_server.api_key,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "ok" / "verification.json").read_text())
    assert report["passed"] is True
    ratio = next(r for r in report["verdict"] if r["metric"] == "output_throughput")
    # seed 002's MI355X 70B FP8 8k/1k c64 run reports 873.98 tok/s output throughput
    assert ratio["baseline"] == 873.98
    measured = report["benchmarks"]["c4"]["output_throughput"]
    assert ratio["observed"] == pytest.approx(measured) and measured > 0
    assert ratio["ratio"] == pytest.approx(measured / 873.98)
    assert vllm_server.api_key not in (tmp_path / "ok" / "verification.json").read_text()

    strict = _stack(tmp_path, {"min_flexible_accuracy": 0.9})
    result = run_cli(
        "verify",
        str(strict),
        "--url",
        vllm_server.url,
        "--out",
        str(tmp_path / "bad"),
        api_key=vllm_server.api_key,
    )
    assert result.returncode == 1
    assert "gsm8k/gsm8k_flexible_extract: expected >= 0.9" in result.stderr
