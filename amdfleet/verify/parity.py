"""Output parity: an engine's greedy continuations, token for token, against a reference.

A fixed prompt set (``parity_prompts.json`` beside this module) is sent to
``/v1/completions`` with ``temperature: 0``; the generated token ids of each prompt are
compared with a reference recorded for the same model and revision — by transformers from
the same checkpoint (``scripts/build-smollm2`` for the ``local`` stacks), or from a
known-good deployment (:func:`record_reference`, ``amdfleet parity record``). The share of
prompts whose first K tokens match is the metric; a wrong dtype, a broken kernel or a
mangled checkpoint changes the tokens within a few positions, while a benchmark or a
small GSM8K run notices nothing.

The prompts go as token ids when the reference has them (no tokenizer disagreement about
special tokens can creep in); the engine must return the generated ids — vLLM does with
``return_token_ids`` (vllm/entrypoints/openai/completion/protocol.py at 0.32.0), and with
``logprobs`` plus ``return_tokens_as_token_ids`` as ``token_id:N`` strings. An engine that
returns neither fails the check, saying so.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amdfleet.plan.models import ParityInput
from amdfleet.verify.bench import wait_or_stop
from amdfleet.verify.client import EndpointClient, RequestFailed
from amdfleet.verify.reference import (
    FORMAT,
    ParityReference,
    ParityReferenceError,
    ReferencePrompt,
)

PROMPTS_FILE = Path(__file__).with_name("parity_prompts.json")
__all__ = [
    "FORMAT",
    "Generation",
    "ParityReference",
    "ParityReferenceError",
    "ParityResult",
    "PromptParity",
    "PromptSet",
    "ReferencePrompt",
    "prompt_set",
    "record_reference",
    "run_parity",
]


@dataclass(frozen=True)
class PromptSet:
    """The fixed prompts and how many tokens a reference records for each."""

    prompts: tuple[str, ...]
    max_tokens: int


def prompt_set() -> PromptSet:
    """amdfleet's parity prompts (``parity_prompts.json``)."""
    data = json.loads(PROMPTS_FILE.read_text())
    return PromptSet(tuple(data["prompts"]), int(data["max_tokens"]))


@dataclass(frozen=True)
class PromptParity:
    """One prompt's comparison: ``diverged_at`` is the first differing position (None
    when the first K tokens match), ``error`` a failed request's reason."""

    index: int
    prompt: str
    expected: tuple[int, ...]
    observed: tuple[int, ...] | None
    observed_text: str = ""
    error: str = ""

    @property
    def diverged_at(self) -> int | None:
        if self.observed is None:
            return 0
        for position, (want, got) in enumerate(zip(self.expected, self.observed, strict=False)):
            if want != got:
                return position
        if len(self.expected) != len(self.observed):
            return min(len(self.expected), len(self.observed))
        return None

    @property
    def matched(self) -> bool:
        return self.error == "" and self.diverged_at is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "index": self.index,
            "prompt": self.prompt,
            "matched": self.matched,
            "diverged_at": self.diverged_at,
            "expected": list(self.expected),
            "observed": None if self.observed is None else list(self.observed),
            "observed_text": self.observed_text,
            "error": self.error or None,
        }


@dataclass(frozen=True)
class ParityResult:
    """The check's outcome: every prompt compared over its first ``tokens`` tokens."""

    reference: ParityReference
    dtype: str
    tokens: int
    prompts: tuple[PromptParity, ...]
    interrupted: bool = False

    @property
    def matched(self) -> int:
        return sum(p.matched for p in self.prompts)

    @property
    def share(self) -> float:
        """Share of the reference's prompts whose first K tokens matched."""
        return self.matched / len(self.reference.prompts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "reference": self.reference.describe(),
            "dtype": self.dtype,
            "tokens": self.tokens,
            "matched": self.matched,
            "prompts": len(self.reference.prompts),
            "share": self.share,
            "interrupted": self.interrupted,
            "results": [p.to_dict() for p in self.prompts],
        }


async def run_parity(
    client: EndpointClient,
    spec: ParityInput,
    reference: ParityReference,
    *,
    model: str,
    dtype: str,
    stop: asyncio.Event | None = None,
) -> ParityResult:
    """Send every reference prompt, greedy, and compare the first ``spec.tokens`` ids
    (``reference`` as :func:`~amdfleet.verify.reference.load_reference` checked it)."""
    expected = reference.continuations_for(dtype)
    semaphore = asyncio.Semaphore(spec.concurrency)
    results: list[PromptParity | None] = [None] * len(reference.prompts)
    eos = set(reference.eos_token_ids)

    async def ask(index: int, prompt: ReferencePrompt) -> None:
        want = _trim(expected[index], eos)[: spec.tokens]
        async with semaphore:
            try:
                out = await generate(client, model, prompt.prompt_ids or prompt.prompt, spec.tokens)
            except RequestFailed as e:
                results[index] = PromptParity(index, prompt.prompt, want, None, error=str(e))
                return
        got = _trim(out.ids, eos)[: spec.tokens]
        results[index] = PromptParity(index, prompt.prompt, want, got, observed_text=out.text)

    async def ask_all() -> None:
        await asyncio.gather(*(ask(i, p) for i, p in enumerate(reference.prompts)))

    interrupted = await wait_or_stop(asyncio.create_task(ask_all()), stop)
    done = tuple(r for r in results if r is not None)
    return ParityResult(reference, dtype, spec.tokens, done, interrupted=interrupted)


@dataclass(frozen=True)
class Generation:
    """One greedy completion: the generated ids and text, and the prompt's ids as the
    engine tokenized it (None when it does not say)."""

    ids: tuple[int, ...]
    text: str
    prompt_ids: tuple[int, ...] | None


async def generate(
    client: EndpointClient, model: str, prompt: str | Sequence[int], max_tokens: int
) -> Generation:
    """One greedy completion of ``prompt`` (text or token ids)."""
    payload = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
        "temperature": 0,
        "return_token_ids": True,
        "logprobs": 1,
        "return_tokens_as_token_ids": True,
    }
    data = await client.complete_json(payload)
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise RequestFailed(f"malformed response: {str(data)[:200]}") from e
    prompt_ids = choice.get("prompt_token_ids")
    return Generation(
        ids=_generated_ids(choice),
        text=str(choice.get("text") or ""),
        prompt_ids=tuple(int(t) for t in prompt_ids) if prompt_ids else None,
    )


async def record_reference(
    client: EndpointClient,
    *,
    model: str,
    dtype: str,
    model_id: str,
    revision: str,
    recorded_by: str,
    eos_token_ids: Sequence[int] = (),
    prompts: PromptSet | None = None,
) -> dict[str, Any]:
    """A reference document from a known-good endpoint (``amdfleet parity record``):
    the prompts as the engine tokenized them and its greedy continuations."""
    chosen = prompts or prompt_set()
    records = []
    for text in chosen.prompts:
        out = await generate(client, model, text, chosen.max_tokens)
        records.append(
            {
                "prompt": text,
                "prompt_ids": list(out.prompt_ids) if out.prompt_ids else None,
                "continuations": {dtype: list(_trim(out.ids, set(eos_token_ids)))},
                "text": {dtype: out.text},
            }
        )
    return {
        "format": FORMAT,
        "model": model_id,
        "revision": revision,
        "recorded_by": recorded_by,
        "recorded_at": datetime.date.today().isoformat(),
        "max_tokens": chosen.max_tokens,
        "eos_token_ids": list(eos_token_ids),
        "dtypes": [dtype],
        "prompts": records,
    }


def _generated_ids(choice: Mapping[str, Any]) -> tuple[int, ...]:
    ids = choice.get("token_ids")
    if isinstance(ids, list):
        return tuple(int(t) for t in ids)
    tokens = (choice.get("logprobs") or {}).get("tokens")
    if isinstance(tokens, list) and all(
        isinstance(t, str) and t.startswith("token_id:") for t in tokens
    ):
        return tuple(int(t.removeprefix("token_id:")) for t in tokens)
    raise RequestFailed(
        "the engine returned no generated token ids (neither choices[].token_ids nor "
        "logprobs tokens as token_id:N), so its output cannot be compared token for token"
    )


def _trim(ids: Sequence[int], eos: set[int]) -> tuple[int, ...]:
    """Without the end-of-sequence token(s) a continuation may end with."""
    out = list(ids)
    while out and out[-1] in eos:
        out.pop()
    return tuple(out)
