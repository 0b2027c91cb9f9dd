"""GSM8K scored exactly as lm-evaluation-harness's ``gsm8k`` task (version 3) scores it.

Facts taken from lm-eval 0.4 (``tasks/gsm8k/gsm8k.yaml``, ``api/task.py``,
``api/samplers.py``, ``filters/extraction.py``, ``api/metrics.py``):

- Prompt: ``num_fewshot`` solved train problems, each ``"Question: {q}\\nAnswer: {a}"``
  followed by ``"\\n\\n"``, then ``"Question: {q}\\nAnswer:"`` for the test problem.
- Few-shot examples: one ``random.Random(1234)`` for the whole task, drawing
  ``sample(train, k)`` for each test problem in order (so ``--limit N`` sees the same
  examples as a full run does for its first N problems).
- Generation: greedy (temperature 0), up to 256 tokens, stop at ``"Question:"``,
  ``"</s>"`` or ``"<|im_end|>"``, sent to ``/v1/completions`` with seed 1234 (as the
  ``local-completions`` model sends it).
- ``strict-match``: the first ``#### <number>``; ``flexible-extract``: the last number
  in the response; ``[invalid]`` when there is none.
- ``exact_match``: after removing ``,``, ``$``, everything up to ``#### `` and a final
  ``.``, and lower-casing, the extracted answer equals the reference answer.
- Score: the mean over problems; stderr = sample std (n-1) / sqrt(n).

The dataset is read from a directory with ``test.jsonl`` and ``train.jsonl``, or
downloaded from the public GSM8K repository when no directory is given.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amdfleet.errors import AmdFleetError
from amdfleet.plan.models import AccuracyInput
from amdfleet.verify.bench import wait_or_stop
from amdfleet.verify.client import EndpointClient, RequestFailed

TASK_VERSION = 3
FEWSHOT_SEED = 1234
STOP_SEQUENCES = ("Question:", "</s>", "<|im_end|>")
SOURCE_URL = (
    "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data"
)
INVALID = "[invalid]"

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")


class DatasetUnavailable(AmdFleetError):
    """GSM8K could not be read from the given path or downloaded."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One GSM8K problem: the question and the reference solution ending in ``#### N``."""

    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Scored:
    """One test problem's response and how each filter scored it."""

    index: int
    prompt: str
    response: str
    target: str
    strict: str
    flexible: str
    strict_correct: bool
    flexible_correct: bool
    error: str = ""


@dataclass(frozen=True)
class Score:
    """A filter's exact-match score over the problems, with lm-eval's stderr."""

    value: float
    stderr: float | None


@dataclass(frozen=True)
class AccuracyResult:
    """GSM8K results: both filters' scores and every scored sample."""

    num_fewshot: int
    samples: tuple[Scored, ...]
    interrupted: bool = False

    @property
    def strict_match(self) -> Score:
        """The ``strict-match`` filter's exact match."""
        return mean_with_stderr([s.strict_correct for s in self.samples])

    @property
    def flexible_extract(self) -> Score:
        """The ``flexible-extract`` filter's exact match."""
        return mean_with_stderr([s.flexible_correct for s in self.samples])

    @property
    def failed(self) -> int:
        """Problems whose request failed (scored as wrong)."""
        return sum(1 for s in self.samples if s.error)

    def to_dict(self) -> dict[str, Any]:
        """Scores in lm-eval's result naming (``exact_match,strict-match`` ...)."""
        strict, flexible = self.strict_match, self.flexible_extract
        return {
            "task": "gsm8k",
            "version": TASK_VERSION,
            "n-shot": self.num_fewshot,
            "samples": len(self.samples),
            "interrupted": self.interrupted,
            "failed_requests": self.failed,
            "exact_match,strict-match": strict.value,
            "exact_match_stderr,strict-match": strict.stderr,
            "exact_match,flexible-extract": flexible.value,
            "exact_match_stderr,flexible-extract": flexible.stderr,
        }


def load_problems(data_path: str | Path | None) -> tuple[list[Problem], list[Problem]]:
    """The test and train splits, from ``data_path`` or downloaded.

    Raises :class:`DatasetUnavailable` when the files are missing or unreadable, or
    when downloading fails (offline): the message says how to point to a local copy.
    """
    if data_path is not None:
        root = Path(data_path).expanduser()
        return _read_split(root / "test.jsonl"), _read_split(root / "train.jsonl")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "amdfleet/gsm8k"
    return _download_split("test", cache), _download_split("train", cache)


def fewshot_prompts(
    test: Sequence[Problem], train: Sequence[Problem], num_fewshot: int, limit: int | None
) -> list[str]:
    """The prompt lm-eval builds for each of the first ``limit`` test problems."""
    rnd = random.Random(FEWSHOT_SEED)
    prompts = []
    for problem in test[:limit]:
        shots = rnd.sample(list(train), num_fewshot) if num_fewshot else []
        context = "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots)
        prompts.append(f"{context}Question: {problem.question}\nAnswer:")
    return prompts


def strict_extract(response: str) -> str:
    """The ``strict-match`` filter: the first ``#### <number>``."""
    match = _STRICT.findall(response)
    return str(match[0]).strip() if match else INVALID


def flexible_extract(response: str) -> str:
    """The ``flexible-extract`` filter: the last number-like run in the response."""
    matches = _FLEXIBLE.findall(response)
    if not matches:
        return INVALID
    groups = [g for g in matches[-1] if g]
    return groups[0].strip() if groups else INVALID


def normalize(text: str) -> str:
    """lm-eval's exact_match normalization for gsm8k (regexes to ignore, lower case)."""
    for pattern in _IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def is_correct(extracted: str, target: str) -> bool:
    """Whether an extracted answer exactly matches the reference solution's answer."""
    return normalize(extracted) == normalize(target)


def mean_with_stderr(items: Sequence[bool | float]) -> Score:
    """lm-eval's ``mean`` and ``mean_stderr`` (None below two items, as its 'N/A')."""
    n = len(items)
    if n == 0:
        return Score(0.0, None)
    mu = sum(float(x) for x in items) / n
    if n < 2:
        return Score(mu, None)
    variance = sum((float(x) - mu) ** 2 for x in items) / (n - 1)
    return Score(mu, math.sqrt(variance) / math.sqrt(n))


def score_response(index: int, prompt: str, response: str, target: str, error: str = "") -> Scored:
    """Score one response with both filters."""
    strict, flexible = strict_extract(response), flexible_extract(response)
    return Scored(
        index=index,
        prompt=prompt,
        response=response,
        target=target,
        strict=strict,
        flexible=flexible,
        strict_correct=is_correct(strict, target),
        flexible_correct=is_correct(flexible, target),
        error=error,
    )


async def run_gsm8k(
    client: EndpointClient,
    spec: AccuracyInput,
    *,
    model: str,
    problems: tuple[Sequence[Problem], Sequence[Problem]] | None = None,
    stop: asyncio.Event | None = None,
    on_done: Callable[[Scored], None] | None = None,
) -> AccuracyResult:
    """Ask the endpoint every prompt, ``spec.concurrency`` at a time, and score them.

    A failed request scores as wrong and keeps its reason in ``Scored.error``. If
    ``stop`` is set, requests in flight are cancelled and the problems answered so far
    are scored (the result is marked ``interrupted``).
    """
    test, train = problems if problems is not None else load_problems(spec.data_path)
    prompts = fewshot_prompts(test, train, spec.num_fewshot, spec.limit)
    semaphore = asyncio.Semaphore(spec.concurrency)

    scored: list[Scored | None] = [None] * len(prompts)

    async def ask(index: int, prompt: str) -> None:
        payload = {
            "model": model,
            "prompt": prompt,
            "max_tokens": spec.max_tokens,
            "temperature": 0,
            "stop": list(STOP_SEQUENCES),
            "seed": FEWSHOT_SEED,
        }
        async with semaphore:
            try:
                text, error = (await client.complete(payload)).text, ""
            except RequestFailed as e:
                text, error = "", str(e)
        result = score_response(index, prompt, text, test[index].answer, error)
        scored[index] = result
        if on_done is not None:
            on_done(result)

    async def ask_all() -> None:
        await asyncio.gather(*(ask(i, p) for i, p in enumerate(prompts)))

    interrupted = await wait_or_stop(asyncio.create_task(ask_all()), stop)
    samples = tuple(s for s in scored if s is not None)
    return AccuracyResult(spec.num_fewshot, samples, interrupted=interrupted)


def _read_split(path: Path) -> list[Problem]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetUnavailable(
            f"cannot read GSM8K split {path}: {e.strerror}; the directory must hold "
            "test.jsonl and train.jsonl (the files of github.com/openai/grade-school-math)"
        ) from e
    try:
        return [_problem(json.loads(line)) for line in lines if line.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetUnavailable(
            f"{path}: each line must be a JSON object with 'question' and 'answer'"
        ) from e


def _problem(row: dict[str, Any]) -> Problem:
    return Problem(question=str(row["question"]), answer=str(row["answer"]))


def _download_split(split: str, cache: Path) -> list[Problem]:
    target = cache / f"{split}.jsonl"
    if not target.is_file():
        import httpx

        url = f"{SOURCE_URL}/{split}.jsonl"
        try:
            response = httpx.get(url, timeout=60.0, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise DatasetUnavailable(
                f"cannot download GSM8K {split} split from {url} ({e}); offline, pass "
                "--data-path DIR (or accuracy.data_path) with test.jsonl and train.jsonl"
            ) from e
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(response.content)
        partial.replace(target)
    return _read_split(target)
