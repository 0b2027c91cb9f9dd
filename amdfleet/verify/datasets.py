"""Benchmark prompts: random token sequences, ShareGPT files, fixed prompt files.

The random dataset follows vLLM's ``RandomDataset`` step for step (numpy
``default_rng(seed)``; lengths uniform in ``len × (1 ± range_ratio)``; the sequence
``allowed[(offset + i + arange(len)) % n_allowed]``; decode, re-encode and pad or cut
until the prompt is exactly the requested number of tokens), so the same tokenizer and
seed give the prompts ``vllm bench serve --dataset-name random`` sends. Where vLLM's
retries end with a prompt of the wrong length (tokens that do not survive a
decode/encode round trip), this module goes on until the length is exact. The requested
input length includes the special tokens the server adds (Llama's BOS).

ShareGPT sampling follows vLLM's ``ShareGPTDataset`` (shuffle with ``seed``, first turn
as the prompt, the same length filters), with ``output_len`` always fixing the output.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from amdfleet.errors import AmdFleetError

if TYPE_CHECKING:
    import numpy as np

_DECODE_RETRIES = 10
_FORCE_RETRIES = 50


class DatasetError(AmdFleetError):
    """A dataset or tokenizer cannot be loaded or cannot produce the requested prompts."""


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One prompt to send and the number of tokens to ask for."""

    prompt: str
    prompt_len: int
    output_len: int


class Tokenizer:
    """The served model's tokenizer (a ``tokenizers`` tokenizer.json), as vLLM uses it."""

    def __init__(self, source: str, backend: object, special_ids: frozenset[int]) -> None:
        self.source = source
        self.special_ids = special_ids
        self._tok = backend

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``."""
        ids: list[int] = self._tok.encode(text, add_special_tokens=add_special_tokens).ids  # type: ignore[attr-defined]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens kept (as vLLM decodes random prompts)."""
        text: str = self._tok.decode(list(ids), skip_special_tokens=False)  # type: ignore[attr-defined]
        return text

    @property
    def vocab_size(self) -> int:
        """Base vocabulary size (without added tokens), like ``transformers``."""
        size: int = self._tok.get_vocab_size(with_added_tokens=False)  # type: ignore[attr-defined]
        return size

    @property
    def num_special_tokens_to_add(self) -> int:
        """Special tokens the server adds to a single prompt (Llama: BOS)."""
        processor = self._tok.post_processor  # type: ignore[attr-defined]
        return int(processor.num_special_tokens_to_add(False)) if processor else 0


def load_tokenizer(name_or_path: str) -> Tokenizer:
    """Load a tokenizer from a model directory, a tokenizer.json, or the model hub.

    Raises :class:`DatasetError` with a hint when the tokenizer is nowhere to be found
    (offline and not a local path).
    """
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(name_or_path).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.is_file():
        try:
            backend = HFTokenizer.from_file(str(file))
        except Exception as e:
            raise DatasetError(f"cannot read tokenizer {file}: {e}") from e
        return Tokenizer(str(file), backend, _special_ids(backend, file.parent))
    if path.is_dir():
        raise DatasetError(f"{path} has no tokenizer.json; pass --tokenizer DIR")
    try:
        backend = HFTokenizer.from_pretrained(name_or_path)
        return Tokenizer(name_or_path, backend, _special_ids(backend, None))
    except Exception as e:
        raise DatasetError(
            f"cannot load tokenizer {name_or_path!r} from the model hub ({e}); "
            "offline, pass --tokenizer with a local model directory or tokenizer.json"
        ) from e


def random_requests(
    tokenizer: Tokenizer,
    *,
    num_prompts: int,
    input_len: int,
    output_len: int,
    range_ratio: float = 0.0,
    seed: int = 0,
) -> list[BenchRequest]:
    """Random prompts of exact token lengths, as vLLM's random dataset makes them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    real_input_len = max(0, input_len - tokenizer.num_special_tokens_to_add)
    in_low = math.floor(real_input_len * (1 - range_ratio))
    in_high = math.ceil(real_input_len * (1 + range_ratio))
    if in_low < 1:
        raise DatasetError(
            f"input length {input_len} is too small: after the tokenizer's "
            f"{tokenizer.num_special_tokens_to_add} special token(s) and range ratio "
            f"{range_ratio}, a prompt could have {in_low} tokens"
        )
    out_low = max(math.floor(output_len * (1 - range_ratio)), 1)
    out_high = max(math.ceil(output_len * (1 + range_ratio)), 1)
    vocab = tokenizer.vocab_size
    input_lens = rng.integers(in_low, in_high + 1, size=num_prompts)
    output_lens = rng.integers(out_low, out_high + 1, size=num_prompts)
    offsets = rng.integers(0, vocab, size=num_prompts)
    special = tokenizer.special_ids
    allowed = np.array([t for t in range(vocab) if t not in special])
    requests = []
    for i in range(num_prompts):
        length = int(input_lens[i])
        tokens = allowed[(int(offsets[i]) + i + np.arange(length)) % len(allowed)].tolist()
        prompt, ids = _decode_to_length(tokenizer, tokens, length, rng)
        requests.append(BenchRequest(prompt, len(ids), int(output_lens[i])))
    return requests


def sharegpt_requests(
    path: str | Path,
    tokenizer: Tokenizer,
    *,
    num_prompts: int,
    output_len: int,
    seed: int = 0,
) -> list[BenchRequest]:
    """First-turn prompts from a ShareGPT-format JSON file, shuffled with ``seed``."""
    entries = _read_json(Path(path))
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: a ShareGPT file is a JSON list of conversations")
    conversations = [
        e for e in entries if isinstance(e, dict) and len(e.get("conversations") or []) >= 2
    ]
    random.Random(seed).shuffle(conversations)
    requests: list[BenchRequest] = []
    for entry in conversations:
        if len(requests) >= num_prompts:
            break
        prompt = str(entry["conversations"][0]["value"])
        prompt_len = len(tokenizer.encode(prompt, add_special_tokens=True))
        if _valid_sharegpt_lengths(prompt_len, output_len):
            requests.append(BenchRequest(prompt, prompt_len, output_len))
    if not requests:
        raise DatasetError(f"{path}: no conversation has a usable first turn")
    return _oversample(requests, num_prompts, seed)


def prompt_file_requests(
    path: str | Path,
    tokenizer: Tokenizer | None,
    *,
    num_prompts: int,
    output_len: int,
) -> list[BenchRequest]:
    """Fixed prompts, in file order, repeated to ``num_prompts``.

    A ``.jsonl`` file holds one ``{"prompt": ...}`` object per line (vLLM's custom
    dataset format); any other file holds one prompt per non-empty line.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read prompts file {file}: {e.strerror}") from e
    if file.suffix == ".jsonl":
        try:
            prompts = [str(json.loads(line)["prompt"]) for line in lines if line.strip()]
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{file}: each line must be a JSON object with 'prompt'") from e
    else:
        prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise DatasetError(f"{file} holds no prompts")
    lengths = {
        p: len(tokenizer.encode(p, add_special_tokens=True)) if tokenizer else 0 for p in prompts
    }
    return [
        BenchRequest(p, lengths[p], output_len)
        for p in (prompts[i % len(prompts)] for i in range(num_prompts))
    ]


def _special_ids(backend: object, model_dir: Path | None) -> frozenset[int]:
    # transformers' `all_special_ids` (what vLLM excludes from random prompts) are the
    # tokens tokenizer_config.json names; without that file, every special added token.
    config_file = model_dir / "tokenizer_config.json" if model_dir else None
    if config_file is None or not config_file.is_file():
        added = backend.get_added_tokens_decoder()  # type: ignore[attr-defined]
        return frozenset(i for i, token in added.items() if token.special)
    config = json.loads(config_file.read_text(encoding="utf-8"))
    names = [config.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")]
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = config.get(key)
        names += list(extra.values() if isinstance(extra, dict) else extra or [])
    contents = [n.get("content") if isinstance(n, dict) else n for n in names]
    ids = (backend.token_to_id(c) for c in contents if isinstance(c, str))  # type: ignore[attr-defined]
    return frozenset(i for i in ids if i is not None)


def _decode_to_length(
    tokenizer: Tokenizer, tokens: list[int], target: int, rng: np.random.Generator
) -> tuple[str, list[int]]:
    # Decoding then encoding may merge or split tokens; pad with random ids or cut
    # until the prompt re-encodes to exactly `target` tokens (vLLM's retry budget, so
    # the prompts are vLLM's whenever vLLM's are exact).
    retries = _DECODE_RETRIES
    while True:
        prompt = tokenizer.decode(tokens)
        tokens = tokenizer.encode(prompt)
        if retries <= 0 or len(tokens) == target:
            break
        if len(tokens) < target:
            extra = rng.integers(0, tokenizer.vocab_size, size=target - len(tokens))
            tokens.extend(extra.tolist())
        else:
            tokens = tokens[:target]
        retries -= 1
    if len(tokens) == target:
        return prompt, tokens
    return _force_length(tokenizer, prompt, target, rng)


def _force_length(
    tokenizer: Tokenizer, prompt: str, target: int, rng: np.random.Generator
) -> tuple[str, list[int]]:
    # vLLM gives up here and sends a prompt of the wrong length (byte tokens that
    # decode to U+FFFD do not round-trip). Drop those and pad with tokens that do.
    safe = _round_trip_tokens(tokenizer)
    tokens = tokenizer.encode(prompt.replace("\ufffd", ""))[:target]
    for _ in range(_FORCE_RETRIES):
        prompt = tokenizer.decode(tokens)
        tokens = tokenizer.encode(prompt)
        if len(tokens) == target:
            return prompt, tokens
        if len(tokens) > target:
            tokens = tokens[:target]
        else:
            tokens.extend(rng.choice(safe, size=target - len(tokens)).tolist())
    raise DatasetError(
        f"cannot make a prompt of exactly {target} tokens with tokenizer {tokenizer.source}"
    )


def _round_trip_tokens(tokenizer: Tokenizer, wanted: int = 64) -> list[int]:
    found: list[int] = []
    for token in range(tokenizer.vocab_size - 1, -1, -1):
        if token in tokenizer.special_ids:
            continue
        text = tokenizer.decode([token])
        if "\ufffd" not in text and tokenizer.encode(text) == [token]:
            found.append(token)
            if len(found) == wanted:
                break
    return found


def _valid_sharegpt_lengths(prompt_len: int, output_len: int) -> bool:
    # vLLM's pruning: prompts of 4..1024 tokens and at most 2048 tokens in total.
    return 4 <= prompt_len <= 1024 and prompt_len + output_len <= 2048


def _oversample(requests: list[BenchRequest], wanted: int, seed: int) -> list[BenchRequest]:
    if len(requests) >= wanted:
        return requests
    rnd = random.Random(seed)
    return requests + [rnd.choice(requests) for _ in range(wanted - len(requests))]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e
