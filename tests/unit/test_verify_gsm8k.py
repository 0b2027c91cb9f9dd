"""GSM8K as lm-evaluation-harness's gsm8k task (v3) does it: prompts, filters, scores.

The golden extraction cases were produced by lm-eval 0.4.13's own ``RegexFilter`` and
``exact_match_hf_evaluate`` with the task's settings; the few-shot golden questions come
from lm-eval's logged prompts (benchmarks/lmeval_agreement.py compares whole prompts).
The scorer is exercised end to end against the scripted test server, because a
random-weight model cannot give known answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from amdfleet.config import AccuracySpec
from amdfleet.plan.models import AccuracyInput
from amdfleet.plan.verification import accuracy_input
from amdfleet.verify.client import EndpointClient
from amdfleet.verify.gsm8k import (
    INVALID,
    DatasetUnavailable,
    Problem,
    fewshot_prompts,
    flexible_extract,
    is_correct,
    load_problems,
    mean_with_stderr,
    run_gsm8k,
    strict_extract,
)
from tests.support.openai_server import OpenAIServer, Script

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gsm8k"

# (response, reference, strict, flexible, strict correct, flexible correct) from lm-eval
GOLDEN = [
    ("Janet sells 9 eggs.\n#### 18", "#### 18", "18", "18", True, True),
    ("The total is $1,234.", "#### 1234", INVALID, "$1,234.", False, True),
    ("She owes -5 dollars, so #### -5", "#### -5", "-5", "-5", True, True),
    ("The answer is 18.", "#### 18", INVALID, "18.", False, True),
    ("The answer is 18.00", "#### 18", INVALID, "18.00", False, False),
    ("I cannot solve this.", "#### 18", INVALID, INVALID, False, False),
    ("#### 1,000", "#### 1000", "1,000", "1,000", True, True),
    ("#### $18", "#### 18", INVALID, "$18", False, True),
    ("It is 5, not 7", "#### 5", INVALID, "7", False, False),
    ("x = 3.5", "#### 3.5", INVALID, "3.5", False, True),
    ("Costs $5.", "#### 5", INVALID, "$5.", False, True),
    ("#### 18\n\nQuestion: ... #### 7", "#### 18", "18", "7", True, False),
    ("-", "#### 0", INVALID, INVALID, False, False),
    ("answer: 0.5", "#### .5", INVALID, "0.5", False, False),
    ("the value is 1,2", "#### 12", INVALID, "1,2", False, True),
    ("", "#### 3", INVALID, INVALID, False, False),
    ("We get 4 apples", "#### 4", INVALID, "4", False, True),
    ("#### 72.", "#### 72", "72.", "72.", True, True),
]


@pytest.mark.parametrize(("response", "target", "strict", "flexible", "s_ok", "f_ok"), GOLDEN)
def test_extraction_matches_lm_eval(
    response: str, target: str, strict: str, flexible: str, s_ok: bool, f_ok: bool
) -> None:
    assert strict_extract(response) == strict
    assert flexible_extract(response) == flexible
    assert is_correct(strict, target) is s_ok
    assert is_correct(flexible, target) is f_ok


def test_stderr_is_lm_evals_mean_stderr() -> None:
    score = mean_with_stderr([True, False, False, True])
    assert score.value == 0.5
    # sample std (n-1) / sqrt(n): sqrt(1/3) / 2
    assert score.stderr == pytest.approx(0.28867513459481287)
    assert mean_with_stderr([True]).stderr is None  # lm-eval prints N/A
    assert mean_with_stderr([]).value == 0.0


def test_prompt_format_is_question_answer_pairs() -> None:
    train = [Problem("q1?", "a1\n#### 1"), Problem("q2?", "a2\n#### 2")]
    test = [Problem("Q?", "A\n#### 3")]
    prompt = fewshot_prompts(test, train, 2, None)[0]
    shots, final = prompt.rsplit("\n\n", 1)
    assert final == "Question: Q?\nAnswer:"
    assert sorted(shots.split("\n\n")) == [
        "Question: q1?\nAnswer: a1\n#### 1",
        "Question: q2?\nAnswer: a2\n#### 2",
    ]
    assert fewshot_prompts(test, train, 0, None) == ["Question: Q?\nAnswer:"]


@pytest.fixture(scope="module")
def gsm8k() -> tuple[list[Problem], list[Problem]]:
    return load_problems(DATA)


def test_fewshot_examples_are_lm_evals(gsm8k: tuple[list[Problem], list[Problem]]) -> None:
    test, train = gsm8k
    assert (len(test), len(train)) == (1319, 7473)
    prompts = fewshot_prompts(test, train, 5, 3)
    assert prompts[0].startswith("Question: Jen and Tyler are gymnasts practicing fl")
    assert prompts[1].startswith("Question: Steve finds 100 gold bars while visiting")
    assert prompts[2].startswith("Question: Tom can type 90 words a minute.")
    # one Random(1234) for the task, documents in order: --limit keeps the prefix
    assert fewshot_prompts(test, train, 5, 1) == prompts[:1]
    assert all(p.count("Question: ") == 6 for p in prompts)


def test_missing_data_dir_says_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match=r"test\.jsonl and train\.jsonl"):
        load_problems(tmp_path)


def test_scores_scripted_responses_through_a_real_server(
    gsm8k: tuple[list[Problem], list[Problem]],
) -> None:
    test, train = gsm8k
    # problem 0: strict and flexible right; 1: flexible only; 2: wrong; 3: no answer
    gold = [p.answer.split("#### ")[-1] for p in test[:4]]
    answers = {
        test[0].question: f"Half of them.\n#### {gold[0]}",
        test[1].question: f"It takes {gold[1]} bolts.",
        test[2].question: "#### -1",
        test[3].question: "I do not know",
    }
    spec = accuracy_input(AccuracySpec(limit=4, concurrency=2))
    with OpenAIServer(Script(answers=answers)) as server:
        result = asyncio.run(_score(server.url, spec, (test, train)))
        sent = server.bodies
    assert [s.strict_correct for s in result.samples] == [True, False, False, False]
    assert [s.flexible_correct for s in result.samples] == [True, True, False, False]
    assert result.strict_match.value == 0.25 and result.flexible_extract.value == 0.5
    assert result.failed == 0
    body = sent[0]
    assert body["temperature"] == 0 and body["max_tokens"] == 256
    assert body["stop"] == ["Question:", "</s>", "<|im_end|>"]
    assert "stream" not in body


def test_failed_requests_score_wrong_with_their_reason(
    gsm8k: tuple[list[Problem], list[Problem]],
) -> None:
    test, train = gsm8k
    answers = {p.question: p.answer for p in test[:4]}
    script = Script(answers=answers, fault="http500", fault_every=2)
    with OpenAIServer(script) as server:
        result = asyncio.run(
            _score(server.url, accuracy_input(AccuracySpec(limit=4, concurrency=1)), (test, train))
        )
    assert result.failed == 2
    assert [s.error.startswith("HTTP 500") for s in result.samples] == [False, True, False, True]
    assert result.flexible_extract.value == 0.5


async def _score(
    url: str, spec: AccuracyInput, problems: tuple[list[Problem], list[Problem]]
) -> object:
    async with EndpointClient(url, concurrency=spec.concurrency, timeout=10) as client:
        return await run_gsm8k(client, spec, model="stub-model", problems=problems)
