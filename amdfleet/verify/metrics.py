"""Serving metrics, defined exactly as ``vllm bench serve`` defines them.

Pure functions of the per-request outputs and the run's duration (no I/O), so the
numbers can be checked against vLLM's own formulas in unit tests:

- TTFT: first token event minus the time the request was sent.
- TPOT: ``(latency - ttft) / (output_tokens - 1)`` per request with more than one
  output token (the first token excluded); goodput counts the others as TPOT 0.
- ITL: every gap between consecutive token events, pooled over requests.
- E2EL: last token event minus the time the request was sent.
- Statistics with numpy as vLLM computes them: mean, median, population std, and
  percentiles with linear interpolation; an empty list counts as ``[0]``.
- Peak output throughput: token events per whole second since the first request
  was sent, and the concurrent requests in the busiest second.
- Output token counts are the server's ``usage.completion_tokens``.

Keys of :meth:`BenchmarkMetrics.to_dict` are ``vllm bench serve --save-result`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amdfleet.verify.client import RequestOutput

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
DEFAULT_PERCENTILES = (90.0, 95.0, 99.0)
GOODPUT_METRICS = ("ttft", "tpot", "e2el")


@dataclass(frozen=True)
class LatencyStats:
    """Mean, median, std and percentiles of one latency metric, in milliseconds."""

    mean: float
    median: float
    std: float
    percentiles: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, seconds: Sequence[float], percentiles: Sequence[float]) -> LatencyStats:
        """Statistics of ``seconds`` as vLLM computes them (``[0]`` when empty)."""
        import numpy as np

        values = np.asarray(seconds if len(seconds) else [0.0], dtype=float)
        return cls(
            mean=float(np.mean(values)) * 1000,
            median=float(np.median(values)) * 1000,
            std=float(np.std(values)) * 1000,
            percentiles=tuple(
                (float(p), float(np.percentile(values, p)) * 1000) for p in percentiles
            ),
        )

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile; raises ``KeyError`` if it was not computed."""
        for q, value in self.percentiles:
            if q == p:
                return value
        raise KeyError(f"percentile {p:g} was not computed")


@dataclass(frozen=True)
class BenchmarkMetrics:
    """The aggregate numbers of one benchmark run."""

    completed: int
    failed: int
    duration: float
    total_input: int
    total_output: int
    request_throughput: float
    request_goodput: float | None
    output_throughput: float
    total_token_throughput: float
    max_output_tokens_per_s: float
    max_concurrent_requests: int
    latency: Mapping[str, LatencyStats]

    @property
    def success_rate(self) -> float:
        """Completed over sent (0 when nothing was sent)."""
        sent = self.completed + self.failed
        return self.completed / sent if sent else 0.0

    def to_dict(self) -> dict[str, float | int | None]:
        """The metrics under ``vllm bench serve --save-result`` key names."""
        out: dict[str, float | int | None] = {
            "duration": self.duration,
            "completed": self.completed,
            "failed": self.failed,
            "total_input_tokens": self.total_input,
            "total_output_tokens": self.total_output,
            "request_throughput": self.request_throughput,
            "request_goodput": self.request_goodput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "max_output_tokens_per_s": self.max_output_tokens_per_s,
            "max_concurrent_requests": self.max_concurrent_requests,
        }
        for name, stats in self.latency.items():
            out[f"mean_{name}_ms"] = stats.mean
            out[f"median_{name}_ms"] = stats.median
            out[f"std_{name}_ms"] = stats.std
            for p, value in stats.percentiles:
                out[f"p{percentile_word(p)}_{name}_ms"] = value
        return out


def compute_metrics(
    outputs: Sequence[RequestOutput],
    duration: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput: Mapping[str, float] | None = None,
) -> BenchmarkMetrics:
    """Aggregate per-request outputs into :class:`BenchmarkMetrics`.

    ``goodput`` maps ``ttft``/``tpot``/``e2el`` to an SLO in milliseconds; a request is
    good when it meets every one given.
    """
    done = [o for o in outputs if o.success]
    ttfts = [o.ttft for o in done]
    e2els = [o.latency for o in done]
    itls = [gap for o in done for gap in o.itl]
    all_tpots = [_tpot(o) for o in done]
    tpots = [t for o, t in zip(done, all_tpots, strict=True) if o.output_tokens > 1]
    total_input = sum(o.prompt_len for o in done)
    total_output = sum(o.output_tokens for o in done)
    peak_tokens, peak_requests = _peaks(done)
    return BenchmarkMetrics(
        completed=len(done),
        failed=len(outputs) - len(done),
        duration=duration,
        total_input=total_input,
        total_output=total_output,
        request_throughput=len(done) / duration,
        request_goodput=_good_requests(ttfts, all_tpots, e2els, goodput) / duration
        if goodput
        else None,
        output_throughput=total_output / duration,
        total_token_throughput=(total_input + total_output) / duration,
        max_output_tokens_per_s=peak_tokens,
        max_concurrent_requests=peak_requests,
        latency={
            "ttft": LatencyStats.of(ttfts, percentiles),
            "tpot": LatencyStats.of(tpots, percentiles),
            "itl": LatencyStats.of(itls, percentiles),
            "e2el": LatencyStats.of(e2els, percentiles),
        },
    )


def percentile_word(p: float) -> str:
    """``99.0`` -> ``"99"``, ``99.9`` -> ``"99.9"`` (vLLM's key spelling)."""
    return str(int(p)) if int(p) == p else str(p)


def parse_goodput(pairs: Sequence[str]) -> dict[str, float]:
    """``["ttft:500", "tpot:50"]`` -> ``{"ttft": 500.0, "tpot": 50.0}``.

    Raises ``ValueError`` naming the bad pair and the valid metric names.
    """
    slos: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or name not in GOODPUT_METRICS:
            raise ValueError(
                f"invalid goodput SLO {pair!r}: use NAME:MILLISECONDS with NAME one of "
                f"{', '.join(GOODPUT_METRICS)}"
            )
        try:
            slos[name] = float(value)
        except ValueError as e:
            raise ValueError(f"invalid goodput SLO {pair!r}: {value!r} is not a number") from e
        if slos[name] < 0:
            raise ValueError(f"invalid goodput SLO {pair!r}: must be non-negative")
    return slos


def _tpot(output: RequestOutput) -> float:
    if output.output_tokens <= 1:
        return 0.0
    return (output.latency - output.ttft) / (output.output_tokens - 1)


def _good_requests(
    ttfts: Sequence[float],
    tpots: Sequence[float],
    e2els: Sequence[float],
    slos: Mapping[str, float],
) -> int:
    columns = {"ttft": ttfts, "tpot": tpots, "e2el": e2els}
    chosen = [(columns[name], limit / 1000) for name, limit in slos.items()]
    return sum(all(values[i] <= limit for values, limit in chosen) for i in range(len(ttfts)))


def _peaks(done: Sequence[RequestOutput]) -> tuple[float, int]:
    if not done:
        return 0.0, 0
    first = min(o.start_time for o in done)
    last = max(o.start_time + o.latency for o in done)
    import numpy as np

    seconds = int(np.ceil(last - first)) + 1
    tokens = np.zeros(seconds)
    requests = np.zeros(seconds)
    for o in done:
        buckets = (np.asarray(o.token_times) - first).astype(int)
        np.add.at(tokens, buckets[(buckets >= 0) & (buckets < seconds)], 1)
        requests[int(o.start_time - first) : int(o.start_time + o.latency - first) + 1] += 1
    return float(tokens.max()), int(requests.max())
