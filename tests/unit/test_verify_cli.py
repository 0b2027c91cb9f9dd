"""`amdfleet bench`, `eval` and `verify` against the scripted test server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from amdfleet.cli import main
from tests.support.openai_server import OpenAIServer, Script

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gsm8k"


@pytest.fixture()
def server() -> OpenAIServer:
    with OpenAIServer(Script(answers={})) as s:
        yield s


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("one\ntwo\nthree\n")
    return path


def test_bench_sweep_writes_vllm_json_summary_and_plots(
    server: OpenAIServer, tmp_path: Path
) -> None:
    code, output = _invoke(
        "bench", server.url, "--dataset", "prompts", "--dataset-path", str(_prompts(tmp_path)),
        "--num-prompts", "6", "--output-len", "3", "--max-concurrency", "1",
        "--max-concurrency", "3", "--api-key-env", "MY_KEY", "--goodput", "ttft:1000 tpot:1000",
        "--out", str(tmp_path / "out"),
        env={"MY_KEY": "sekrit"},
    )  # fmt: skip
    assert code == 0, output
    assert output.count(" Serving Benchmark Result ") == 2
    first = json.loads((tmp_path / "out" / "bench-c1.json").read_text())
    assert (first["completed"], first["total_output_tokens"]) == (6, 18)
    assert first["model_id"] == "stub-model"
    # the loopback stub answers far within 1 s TTFT and TPOT: every request counts
    assert first["request_goodput"] == pytest.approx(first["request_throughput"])
    assert first["request_throughput"] == pytest.approx(6 / first["duration"])
    third = json.loads((tmp_path / "out" / "bench-c3.json").read_text())
    assert (third["max_concurrency"], third["completed"]) == (3, 6)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| c1 | 1 | inf | 6 | 0 |" in summary and "| c3 | 3 | inf | 6 | 0 |" in summary
    png = (tmp_path / "out" / "latency_p99.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert {h["Authorization"] for h in server.headers} == {"Bearer sekrit"}
    assert "sekrit" not in output


def test_bench_rate_sweep_names_points(server: OpenAIServer, tmp_path: Path) -> None:
    code, output = _invoke(
        "bench", server.url, "--dataset", "prompts", "--dataset-path", str(_prompts(tmp_path)),
        "--num-prompts", "2", "--output-len", "2", "--request-rate", "50",
        "--request-rate", "inf", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, output
    assert {p.name for p in (tmp_path / "out").glob("bench-*.json")} == {
        "bench-r50.json",
        "bench-unbounded.json",
    }
    assert "Request rate configured (RPS):           50.00" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request-rate", "fast"], "not a number or 'inf'"),
        (["--goodput", "itl:5"], "invalid goodput SLO"),
        (["--percentiles", "0"], "percentiles must be in (0, 100]"),
        (["--num-prompts", "0"], "num_prompts"),
        (["--dataset", "sharegpt"], "needs dataset_path"),
    ],
)
def test_bench_rejects_bad_options(args: list[str], message: str) -> None:
    code, output = _invoke("bench", "http://127.0.0.1:9", *args)
    assert code == 2 and message in output


def test_bench_against_a_dead_server_is_a_clean_error() -> None:
    code, output = _invoke("bench", "http://127.0.0.1:9", "--num-prompts", "1")
    assert code == 1 and "cannot reach the server" in output and "Traceback" not in output


def test_eval_prints_lm_eval_table_and_writes_samples(tmp_path: Path) -> None:
    test_q = json.loads((DATA / "test.jsonl").read_text().splitlines()[0])
    answers = {test_q["question"]: test_q["answer"]}
    with OpenAIServer(Script(answers=answers)) as server:
        code, output = _invoke(
            "eval", server.url, "--limit", "2", "--data-path", str(DATA),
            "--out", str(tmp_path),
        )  # fmt: skip
    assert code == 0, output
    row = ["gsm8k", "3", "flexible-extract", "5", "exact_match", "↑", "0.5000", "±", "0.5000"]
    assert row in [[c.strip() for c in line.strip("|").split("|")] for line in output.splitlines()]
    scores = json.loads((tmp_path / "gsm8k.json").read_text())
    assert scores["exact_match,strict-match"] == 0.5 and scores["samples"] == 2
    assert len((tmp_path / "gsm8k-samples.jsonl").read_text().splitlines()) == 2


def _stack(tmp_path: Path, verification: dict[str, object]) -> Path:
    config = {
        "amdfleet:fleet": {"hosts": [{"name": "local", "connection": "local"}]},
        "amdfleet:topology": {"accelerator": "cpu", "gpus_per_node": 1},
        "amdfleet:model": {"id": "stub-model"},
        "amdfleet:serving": {"api_key_secret": None},
        "amdfleet:verification": verification,
    }
    path = tmp_path / "Pulumi.stub.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def _verification(tmp_path: Path, **thresholds: float) -> dict[str, object]:
    return {
        "scenarios": [
            {
                "name": "c2",
                "dataset": "prompts",
                "dataset_path": str(_prompts(tmp_path)),
                "num_prompts": 4,
                "output_len": 3,
                "max_concurrency": 2,
            }
        ],
        "accuracy": {"limit": 2, "data_path": str(DATA)},
        "thresholds": thresholds,
    }


def test_verify_passes_and_writes_reports(server: OpenAIServer, tmp_path: Path) -> None:
    stack = _stack(tmp_path, _verification(tmp_path, min_output_throughput=1))
    out = tmp_path / "out"
    code, output = _invoke("verify", str(stack), "--url", server.url, "--out", str(out))
    assert code == 0, output
    assert "verification PASSED" in output
    assert json.loads((out / "verification.json").read_text())["passed"] is True
    assert {"verification.md", "bench-c2.json", "gsm8k.json"} <= {p.name for p in out.iterdir()}


def test_verify_fails_with_exit_1_and_the_failed_rows(server: OpenAIServer, tmp_path: Path) -> None:
    stack = _stack(tmp_path, _verification(tmp_path, min_output_throughput=1e9))
    code, output = _invoke("verify", str(stack), "--url", server.url, "--out", str(tmp_path / "o"))
    assert code == 1
    assert "verification FAILED" in output
    assert "c2/output_throughput: expected >= 1000000000" in output
