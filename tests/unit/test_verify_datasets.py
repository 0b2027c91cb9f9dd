"""Benchmark prompts: vLLM's random dataset (exact lengths, seeded), ShareGPT, prompt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from amdfleet.verify.datasets import (
    DatasetError,
    Tokenizer,
    load_tokenizer,
    prompt_file_requests,
    random_requests,
    sharegpt_requests,
)

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes.",
    "Betty is saving money for a new wallet which costs $100.",
] * 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE with a BOS post-processor, saved like a model directory."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<|header|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    path = tmp_path_factory.mktemp("model")
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}})
    )
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    return load_tokenizer(str(model_dir))


def test_tokenizer_facts(tokenizer: Tokenizer) -> None:
    assert tokenizer.num_special_tokens_to_add == 1
    # the named special tokens (as transformers' all_special_ids), not every added one
    assert tokenizer.special_ids == frozenset({0, 1})
    assert tokenizer.encode("clips", add_special_tokens=True)[0] == 0


def test_random_prompts_have_exact_lengths(tokenizer: Tokenizer) -> None:
    requests = random_requests(tokenizer, num_prompts=50, input_len=64, output_len=9, seed=3)
    assert len(requests) == 50
    for r in requests:
        # the server adds BOS: 63 + 1 = the requested 64
        assert len(tokenizer.encode(r.prompt)) == r.prompt_len == 63
        assert r.output_len == 9


def test_random_prompts_are_seeded(tokenizer: Tokenizer) -> None:
    a = random_requests(tokenizer, num_prompts=5, input_len=32, output_len=4, seed=1)
    b = random_requests(tokenizer, num_prompts=5, input_len=32, output_len=4, seed=1)
    c = random_requests(tokenizer, num_prompts=5, input_len=32, output_len=4, seed=2)
    assert a == b and a != c


def test_range_ratio_bounds_lengths(tokenizer: Tokenizer) -> None:
    requests = random_requests(
        tokenizer, num_prompts=100, input_len=41, output_len=20, range_ratio=0.5, seed=0
    )
    inputs = {r.prompt_len for r in requests}
    outputs = {r.output_len for r in requests}
    # 41 requested - 1 BOS = 40 x (1 +- 0.5) = [20, 60]; 20 x (1 +- 0.5) = [10, 30]
    assert min(inputs) >= 20 and max(inputs) <= 60 and len(inputs) > 10
    assert min(outputs) >= 10 and max(outputs) <= 30 and len(outputs) > 5
    # each varied length is still exact: the prompt re-encodes to the length it claims
    assert all(len(tokenizer.encode(r.prompt)) == r.prompt_len for r in requests)


def test_too_short_input_is_refused(tokenizer: Tokenizer) -> None:
    with pytest.raises(DatasetError, match="too small"):
        random_requests(tokenizer, num_prompts=1, input_len=1, output_len=1)


def test_sharegpt_first_turns_shuffled_and_filtered(tmp_path: Path, tokenizer: Tokenizer) -> None:
    conversations = [
        {"conversations": [{"value": f"{CORPUS[i]} {i}"}, {"value": "ok"}]} for i in range(6)
    ]
    conversations.append({"conversations": [{"value": "one turn only"}]})
    conversations.append({"conversations": [{"value": "hi"}, {"value": "too short"}]})
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(conversations))
    # the usable first turns: not the one-turn conversation, not "hi" (2 tokens with BOS,
    # under ShareGPT's minimum of 4)
    usable = {f"{CORPUS[i]} {i}" for i in range(6)}
    assert len(tokenizer.encode("hi", add_special_tokens=True)) < 4
    requests = sharegpt_requests(path, tokenizer, num_prompts=4, output_len=16, seed=0)
    assert len(requests) == 4
    assert len({r.prompt for r in requests}) == 4 and {r.prompt for r in requests} <= usable
    for r in requests:  # the server counts BOS too
        assert r.prompt_len == len(tokenizer.encode(r.prompt, add_special_tokens=True))
        assert r.output_len == 16
    again = sharegpt_requests(path, tokenizer, num_prompts=4, output_len=16, seed=0)
    assert requests == again
    shuffled = sharegpt_requests(path, tokenizer, num_prompts=6, output_len=16, seed=0)
    assert {r.prompt for r in shuffled} == usable  # all six, each once
    more = sharegpt_requests(path, tokenizer, num_prompts=9, output_len=16, seed=0)
    assert len(more) == 9 and {r.prompt for r in more} <= usable  # oversampled, as vLLM does


def test_prompt_files_text_and_jsonl(tmp_path: Path, tokenizer: Tokenizer) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("first prompt\n\nsecond prompt\n")
    requests = prompt_file_requests(text, tokenizer, num_prompts=3, output_len=5)
    assert [r.prompt for r in requests] == ["first prompt", "second prompt", "first prompt"]
    lines = tmp_path / "prompts.jsonl"
    lines.write_text('{"prompt": "a b"}\n{"prompt": "c"}\n')
    assert [r.prompt for r in prompt_file_requests(lines, None, num_prompts=2, output_len=1)] == [
        "a b",
        "c",
    ]
    with pytest.raises(DatasetError, match="'prompt'"):
        (tmp_path / "bad.jsonl").write_text("[1]\n")
        prompt_file_requests(tmp_path / "bad.jsonl", None, num_prompts=1, output_len=1)


def test_missing_tokenizer_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no tokenizer\.json"):
        load_tokenizer(str(tmp_path))
