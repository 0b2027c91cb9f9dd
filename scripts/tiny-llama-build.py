"""Build a tiny random-weight Llama with a locally trained tokenizer.

Run by scripts/build-tiny-llama with the vLLM venv's python. Everything is seeded, so
the same recipe and corpus give the same files; a BUILD stamp (a hash of the recipe and
the corpus) makes a second run a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

RECIPE = {
    "layers": 2,
    "hidden": 128,
    "intermediate": 256,
    "heads": 4,
    "kv_heads": 2,
    "vocab": 4096,
    "max_positions": 4096,
    "dtype": "bfloat16",
    "seed": 0,
    "recipe_version": 1,
}
BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", EOT]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--corpus",
        type=Path,
        required=True,
        help="text or jsonl file to train the tokenizer on; 'builtin' for generated text",
    )
    args = parser.parse_args()
    if str(args.corpus) == "builtin":
        args.corpus = _write_builtin_corpus(args.out.parent / "tiny-llama-corpus.txt")
    stamp = _stamp(args.corpus)
    if (args.out / "BUILD").is_file() and (args.out / "BUILD").read_text() == stamp:
        print(f"tiny llama already built at {args.out}")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        work = Path(tmp) / "model"
        _build_tokenizer(args.corpus, work)
        _build_model(work)
        (work / "BUILD").write_text(stamp)
        if args.out.exists():
            shutil.rmtree(args.out)
        work.rename(args.out)
    print(f"tiny llama built at {args.out}")
    return 0


def _stamp(corpus: Path) -> str:
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(corpus.read_bytes())
    return digest.hexdigest() + "\n"


def _write_builtin_corpus(path: Path) -> Path:
    """Deterministic GSM8K-like text, for machines without the GSM8K data: word problems
    with small numbers and their worked answers (the shape prompts will have)."""
    import random

    rng = random.Random(1234)
    names = ["Ava", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "June"]
    items = ["apple", "book", "coin", "marble", "pencil", "sticker", "cookie", "shell"]
    verbs = [("buys", "+"), ("finds", "+"), ("gives away", "-"), ("loses", "-")]
    lines = []
    for _ in range(20000):
        name, item = rng.choice(names), rng.choice(items)
        verb, op = rng.choice(verbs)
        a, b = rng.randint(10, 999), rng.randint(1, 9)
        total = a + b if op == "+" else a - b
        lines.append(
            f"Question: {name} has {a} {item}s and {verb} {b} more. How many {item}s does "
            f"{name} have now?\nAnswer: {name} has {a} {op} {b} = {total} {item}s.\n#### {total}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _corpus_lines(corpus: Path) -> Iterator[str]:
    # A jsonl file contributes its string values (GSM8K: question and answer).
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if corpus.suffix == ".jsonl" and line.strip():
            yield from (v for v in json.loads(line).values() if isinstance(v, str))
        else:
            yield line


def _build_tokenizer(corpus: Path, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=RECIPE["vocab"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus_lines(corpus), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=EOS,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def _build_model(out: Path) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    torch.manual_seed(RECIPE["seed"])
    config = LlamaConfig(
        vocab_size=RECIPE["vocab"],
        hidden_size=RECIPE["hidden"],
        intermediate_size=RECIPE["intermediate"],
        num_hidden_layers=RECIPE["layers"],
        num_attention_heads=RECIPE["heads"],
        num_key_value_heads=RECIPE["kv_heads"],
        max_position_embeddings=RECIPE["max_positions"],
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=[tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(EOT)],
        pad_token_id=tokenizer.convert_tokens_to_ids(EOS),
        tie_word_embeddings=False,
        torch_dtype=RECIPE["dtype"],
    )
    model = LlamaForCausalLM(config).to(getattr(torch, RECIPE["dtype"]))
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id
    )
    model.save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    sys.exit(main())
