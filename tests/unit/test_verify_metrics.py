"""Serving metrics follow `vllm bench serve`'s definitions (vllm/benchmarks/serve.py)."""

from __future__ import annotations

import pytest

from amdfleet.verify.client import RequestOutput
from amdfleet.verify.metrics import compute_metrics, parse_goodput, percentile_word


def _out(start: float, times: list[float], tokens: int, prompt: int = 10) -> RequestOutput:
    return RequestOutput(
        success=True, start_time=start, token_times=times, output_tokens=tokens, prompt_len=prompt
    )


# Two requests: A sends at 0.0, token events at 0.5, 0.6, 0.8 (4 tokens: two in the
# last event); B sends at 1.0, events at 1.2 and 1.5 (2 tokens). One failed request.
A = _out(0.0, [0.5, 0.6, 0.8], tokens=4, prompt=10)
B = _out(1.0, [1.2, 1.5], tokens=2, prompt=20)
FAILED = RequestOutput(success=False, error="HTTP 500: boom", start_time=0.1)


def test_counts_and_throughputs_use_server_token_counts() -> None:
    m = compute_metrics([A, B, FAILED], duration=2.0)
    assert (m.completed, m.failed) == (2, 1)
    assert (m.total_input, m.total_output) == (30, 6)
    assert m.request_throughput == pytest.approx(1.0)
    assert m.output_throughput == pytest.approx(3.0)
    assert m.total_token_throughput == pytest.approx(18.0)
    assert m.success_rate == pytest.approx(2 / 3)


def test_latencies_are_vllm_definitions() -> None:
    m = compute_metrics([A, B, FAILED], duration=2.0, percentiles=[50.0, 99.0])
    lat = m.latency
    # TTFT: 0.5 and 0.2 s
    assert lat["ttft"].mean == pytest.approx(350.0)
    assert lat["ttft"].std == pytest.approx(150.0)  # population std, as numpy
    # TPOT excludes the first token: A (0.8-0.5)/(4-1)=0.1, B (1.5-1.2-... )=(0.5-0.2)/1
    assert lat["tpot"].mean == pytest.approx((100.0 + 300.0) / 2)
    # ITL: every gap between token events, pooled: 0.1, 0.2 (A), 0.3 (B)
    assert lat["itl"].mean == pytest.approx(200.0)
    assert lat["itl"].median == pytest.approx(200.0)
    # E2EL ends at the last token event: 0.8 and 0.5 s
    assert lat["e2el"].mean == pytest.approx(650.0)
    # numpy's linear interpolation: p99 of [0.2, 0.5] = 0.2 + 0.99 * 0.3
    assert lat["ttft"].percentile(99.0) == pytest.approx(497.0)


def test_single_token_requests_have_no_tpot_but_count_for_goodput() -> None:
    one = _out(0.0, [0.1], tokens=1)
    m = compute_metrics([one], duration=1.0, goodput={"tpot": 1.0})
    assert m.latency["tpot"].mean == 0.0  # empty list counts as [0]
    assert m.request_goodput == pytest.approx(1.0)


def test_goodput_needs_every_slo() -> None:
    m = compute_metrics([A, B], duration=2.0, goodput={"ttft": 300.0, "tpot": 200.0})
    # A: ttft 500 > 300 (bad); B: ttft 200 ok, tpot 300 > 200 (bad)
    assert m.request_goodput == 0.0
    m = compute_metrics([A, B], duration=2.0, goodput={"ttft": 600.0})
    assert m.request_goodput == pytest.approx(1.0)
    assert compute_metrics([A], duration=1.0).request_goodput is None


def test_peak_output_tokens_counts_events_per_second() -> None:
    # A's events at 0.5, 0.6, 0.8 fall in second 0; B's at 1.2, 1.5 in second 1.
    m = compute_metrics([A, B], duration=2.0)
    assert m.max_output_tokens_per_s == 3.0
    # A spans second 0, B spans second 1: never two in the same second
    assert m.max_concurrent_requests == 1


def test_nothing_completed_reports_zeros() -> None:
    m = compute_metrics([FAILED], duration=1.0)
    assert (m.completed, m.failed, m.total_output) == (0, 1, 0)
    assert m.latency["ttft"].mean == 0.0
    assert m.max_output_tokens_per_s == 0.0


def test_result_keys_are_vllm_save_result_keys() -> None:
    result = compute_metrics([A, B], duration=2.0, percentiles=[90.0, 99.9]).to_dict()
    # by hand from A and B above: TTFT 500/200 ms, TPOT 100/300 ms, ITLs 100, 200, 300 ms,
    # E2EL 800/500 ms; percentiles by numpy's linear interpolation
    expected = {
        "duration": 2.0,
        "completed": 2,
        "failed": 0,
        "total_input_tokens": 30,
        "total_output_tokens": 6,
        "request_throughput": 1.0,
        "request_goodput": None,  # no SLOs given
        "output_throughput": 3.0,
        "total_token_throughput": 18.0,
        "max_output_tokens_per_s": 3.0,
        "max_concurrent_requests": 1,
        "mean_ttft_ms": 350.0,
        "median_tpot_ms": 200.0,
        "std_itl_ms": (20000 / 3) ** 0.5,  # population std of 100, 200, 300
        "p90_e2el_ms": 500.0 + 0.9 * 300.0,
        "p99.9_ttft_ms": 200.0 + 0.999 * 300.0,
    }
    for key, value in expected.items():
        assert result[key] == (value if value is None else pytest.approx(value)), key


@pytest.mark.parametrize(("p", "word"), [(99.0, "99"), (90.0, "90"), (99.9, "99.9")])
def test_percentile_words(p: float, word: str) -> None:
    assert percentile_word(p) == word


def test_parse_goodput() -> None:
    assert parse_goodput(["ttft:500", "tpot:50"]) == {"ttft": 500.0, "tpot": 50.0}
    with pytest.raises(ValueError, match="itl"):
        parse_goodput(["itl:5"])
    with pytest.raises(ValueError, match="not a number"):
        parse_goodput(["ttft:fast"])
