#!/usr/bin/env python3
"""Derive TGI's flag manifest from the launcher's source (clap derive `struct Args`).

    git -C <tgi checkout> show v3.3.6:launcher/src/main.rs > /tmp/tgi-main.rs
    scripts/manifest-tgi.py /tmp/tgi-main.rs --tag v3.3.6 \\
        --commit efb94e0d3db6aba9d464bc9a2f83191146203152 \\
        --out amdfleet/catalog/manifests/tgi-3.3.6.json

text-generation-launcher is Rust and is not run here, so this reads the source the way
clap 4's derive does (TGI 3.3.x pins clap 4.5.32 in Cargo.lock):
  - `long` gives --<field name in kebab-case>, `long = "x"` gives --x; `short` gives
    -<first letter of the field>, `short = 'x'` gives -x. Two fields with the same short
    letter compile in a release build and the first declared field gets it (TGI 3.3.6:
    --port and --prometheus-port both declare -p; -p sets --port), so a later duplicate
    is left out.
  - `env` gives the field name in SCREAMING_SNAKE_CASE, `env = "X"` gives X.
  - a `bool` field is a switch (ArgAction::SetTrue, no value; `value_enum` or `action` on
    it does not change that); `Option<bool>` takes true|false; `Vec<T>` is repeatable
    with one value each; everything else takes one value.
  - a field whose type is an enum deriving ValueEnum in the same file (with or without
    `value_enum`) accepts the variants' names: `#[clap(name = "x")]` or the variant in
    kebab-case.
  - `default_value = "..."` is the default; an Option without one defaults to null.
  - clap adds --help/-h and, as Args has `#[clap(version)]`, --version/-V.
A field whose doc comment calls it legacy or deprecated is marked deprecated with that
text. Environment variables: the options' env names and every name the file reads with
env::var (string literal, or a `let` binding of one).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifest_json import render

FIELD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?([a-z_][a-z0-9_]*)\s*:\s*(.+?)\s*,\s*$")
ENV_READ = re.compile(r"\benv::var(?:_os)?\(\s*(?:\"([A-Z0-9_]+)\"|([a-z_][a-z0-9_]*))\s*\)")
LET_STR = re.compile(r"\blet\s+([a-z_][a-z0-9_]*)\s*(?::\s*&str\s*)?=\s*\"([A-Z0-9_]+)\"\s*;")
DEPRECATION = re.compile(r"\b(legacy|deprecated)\b", re.IGNORECASE)
CLAP_ATTRS = ("clap", "arg")
VALUE_ATTRS = ("clap", "value")


@dataclass
class Field:
    """One field of `struct Args`: its name, Rust type, doc text and clap settings."""

    name: str
    rust_type: str
    doc: list[str]
    settings: dict[str, str | None] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    source = args.main_rs.read_text(encoding="utf-8")
    version = args.version or args.tag.removeprefix("v")
    manifest = build_manifest(source, version, args.tag, args.commit, args.generated_on)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(manifest))
    print(f"{args.out}: {len(manifest['flags'])} flags, {len(manifest['env']['known'])} env names")
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("main_rs", type=Path, help="launcher/src/main.rs at --tag")
    parser.add_argument("--tag", required=True, help="TGI release tag, e.g. v3.3.6")
    parser.add_argument("--commit", required=True, help="the tag's 40-hex commit")
    parser.add_argument("--version", help="manifest version (default: --tag without 'v')")
    parser.add_argument("--out", type=Path, required=True, help="manifest to write")
    parser.add_argument(
        "--generated-on", default=datetime.date.today().isoformat(), help="date to record"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[0-9a-f]{40}", args.commit):
        parser.error("--commit must be 40 lowercase hex digits")
    return args


def build_manifest(
    source: str, version: str, tag: str, commit: str, generated_on: str
) -> dict[str, Any]:
    """The manifest for one main.rs: flags from `struct Args`, env names, curated facts."""
    enums = parse_value_enums(source)
    fields = parse_args_struct(source)
    flags, shadowed = _flags(fields, enums)
    option_envs = sorted({f["env"] for f in flags if f["env"]})
    reads = sorted(read_env_names(source))
    facts = FACTS.get(version)
    if facts is None:
        print(f"warning: no curated limits/api_key facts for TGI {version}", file=sys.stderr)
        facts = {
            "limits": {},
            "api_key": {"how": "not reviewed", "logged": "not reviewed", "source": ""},
        }
    where = f"launcher/src/main.rs at {tag} ({commit})"
    notes = "".join(f"; {s} is declared by {a} too but belongs to {b}" for s, a, b in shadowed)
    return {
        "engine": "tgi",
        "version": version,
        "method": "source",
        "source": (
            f"{where}: clap 4 derive `struct Args` read by scripts/manifest-tgi.py "
            f"(the launcher is Rust and is not run here){notes}"
        ),
        "regenerate": (
            f"git show {tag}:launcher/src/main.rs > /tmp/tgi-main.rs && "
            f"scripts/manifest-tgi.py /tmp/tgi-main.rs --tag {tag} --commit {commit} "
            f"--out amdfleet/catalog/manifests/tgi-{version}.json"
        ),
        "generated_on": generated_on,
        "parser": {"kind": "clap", "allow_abbrev": False, "underscores": False},
        "flags": flags,
        "env": {
            "prefixes": [],
            "known": sorted(set(option_envs) | set(reads)),
            "deprecated": {},
            "source": (
                f"{where}: the `env` of each clap option ({len(option_envs)}; clap reads "
                "it when the option is not on the command line) and the variables the "
                "launcher reads with env::var "
                f"({', '.join(reads)})"
            ),
        },
        "limits": facts["limits"],
        "api_key": facts["api_key"],
    }


def parse_args_struct(source: str) -> list[Field]:
    """The fields of `struct Args` with their doc comments and #[clap]/#[arg] settings."""
    body = _block(source, re.compile(r"\bstruct\s+Args\s*\{"))
    fields: list[Field] = []
    doc: list[str] = []
    settings: dict[str, str | None] = {}
    for item in _items(body):
        if item.startswith("///"):
            doc.append(item[3:].strip())
        elif item.startswith("//"):
            continue
        elif item.startswith("#["):
            settings.update(_attribute(item, CLAP_ATTRS))
        elif match := FIELD.match(item):
            fields.append(Field(match[1], match[2], doc, settings))
            doc, settings = [], {}
        else:
            raise ValueError(f"unexpected text in struct Args: {item!r}")
    return fields


def parse_value_enums(source: str) -> dict[str, list[str]]:
    """Enums that derive clap's ValueEnum: name -> the values clap accepts."""
    enums: dict[str, list[str]] = {}
    pattern = re.compile(
        r"#\[derive\(([^)]*)\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?enum\s+(\w+)\s*\{"
    )
    for match in pattern.finditer(source):
        if "ValueEnum" not in match[1]:
            continue
        body = _block(source[match.start() :], re.compile(r"\benum\s+\w+\s*\{"))
        enums[match[2]] = _variants(body)
    return enums


def read_env_names(source: str) -> set[str]:
    """Names read with env::var / env::var_os, as a literal or through `let x = "NAME";`."""
    bound = {m[1]: m[2] for m in LET_STR.finditer(_strip_comments(source))}
    names: set[str] = set()
    for match in ENV_READ.finditer(_strip_comments(source)):
        name = match[1] or bound.get(match[2])
        if name is None:
            raise ValueError(f"env::var({match[2]}) reads a name this script cannot resolve")
        names.add(name)
    return names


# --- clap's derive rules ---------------------------------------------------------------


def _flags(
    fields: list[Field], enums: dict[str, list[str]]
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    flags: list[dict[str, Any]] = []
    owner: dict[str, str] = {"-h": "--help", "-V": "--version"}
    shadowed: list[tuple[str, str, str]] = []
    for f in fields:
        record = _flag(f, enums)
        aliases = []
        for alias in record["aliases"]:
            if alias in owner:
                shadowed.append((alias, record["name"], owner[alias]))
            else:
                owner[alias] = record["name"]
                aliases.append(alias)
        flags.append({**record, "aliases": aliases})
    flags.append(_builtin("--help", "-h"))
    flags.append(_builtin("--version", "-V"))
    return sorted(flags, key=lambda f: f["name"]), shadowed


def _flag(f: Field, enums: dict[str, list[str]]) -> dict[str, Any]:
    s = f.settings
    if "long" not in s:
        raise ValueError(f"field {f.name} has no `long`: a positional or short-only option")
    long = "--" + (_unquote(s["long"]) if s["long"] else f.name.replace("_", "-"))
    aliases = []
    if "short" in s:
        aliases.append("-" + (_unquote(s["short"]) if s["short"] else f.name[0]))
    for key in ("alias", "visible_alias"):
        if s.get(key):
            aliases.append("--" + _unquote(s[key] or ""))
    switch = f.rust_type == "bool"
    inner = _inner_type(f.rust_type)
    return {
        "name": long,
        "aliases": aliases,
        "nargs": 0 if switch else 1,
        "choices": None if switch else _choices(inner, enums),
        "deprecated": _deprecation(f),
        "env": _env_name(f),
        "default": _default(f, inner),
    }


def _builtin(name: str, short: str) -> dict[str, Any]:
    return {
        "name": name,
        "aliases": [short],
        "nargs": 0,
        "choices": None,
        "deprecated": None,
        "env": None,
        "default": None,
    }


def _inner_type(rust_type: str) -> str:
    """Option<Vec<T>> -> T, Option<T> -> T, Vec<T> -> T."""
    inner = rust_type
    while match := re.fullmatch(r"(?:Option|Vec)<(.+)>", inner):
        inner = match[1].strip()
    return inner


def _choices(inner: str, enums: dict[str, list[str]]) -> list[str] | None:
    if inner == "bool":
        return ["true", "false"]
    return enums.get(inner)


def _env_name(f: Field) -> str | None:
    if "env" not in f.settings:
        return None
    value = f.settings["env"]
    return _unquote(value) if value else f.name.upper()


def _default(f: Field, inner: str) -> object:
    if f.rust_type == "bool":
        return False
    raw = f.settings.get("default_value")
    if raw is None:
        return None
    text = _unquote(raw)
    if re.fullmatch(r"[ui](8|16|32|64|128|size)", inner):
        return int(text)
    if inner in ("f32", "f64"):
        return float(text)
    return text


def _deprecation(f: Field) -> str | None:
    text = " ".join(f.doc).strip()
    if "hide" in f.settings:
        text = f"{text} (hidden from --help)".strip()
    if DEPRECATION.search(text) or "hide" in f.settings:
        return re.sub(r"\[`Args::(\w+)`\]", lambda m: f"--{m[1].replace('_', '-')}", text)
    return None


def _variants(body: str) -> list[str]:
    values: list[str] = []
    settings: dict[str, str | None] = {}
    for item in _items(body):
        if item.startswith("//"):
            continue
        if item.startswith("#["):
            settings.update(_attribute(item, VALUE_ATTRS))
            continue
        name = re.match(r"^(\w+)", item)
        if name is None:
            raise ValueError(f"unexpected text in a ValueEnum: {item!r}")
        if "skip" not in settings:
            given = settings.get("name")
            values.append(_unquote(given) if given else _kebab(name[1]))
        settings = {}
    return values


def _kebab(name: str) -> str:
    """clap's ValueEnum naming (heck's kebab-case): CompressedTensors -> compressed-tensors,
    BitsandbytesNf4 -> bitsandbytes-nf4, NoStack -> no-stack."""
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+", name)
    return "-".join(w.lower() for w in words)


# --- a small reader for Rust items ------------------------------------------------------


def _block(source: str, opener: re.Pattern[str]) -> str:
    """The text between the braces that follow the first match of opener."""
    match = opener.search(source)
    if match is None:
        raise ValueError(f"{opener.pattern} not found")
    depth, start = 0, match.end() - 1
    for i, ch in _code_chars(source, start):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return source[start + 1 : i]
    raise ValueError(f"unbalanced braces after {opener.pattern}")


def _code_chars(source: str, start: int) -> Iterator[tuple[int, str]]:
    """Characters outside comments, strings and char literals."""
    i = start
    while i < len(source):
        if source.startswith("//", i):
            i = source.find("\n", i) % (len(source) + 1)
            continue
        ch = source[i]
        if ch == '"':
            i = _string_end(source, i)
            continue
        if ch == "'" and re.match(r"'(\\.|[^\\'])'", source[i : i + 4]):
            i = source.index("'", i + 2) + 1
            continue
        yield i, ch
        i += 1


def _string_end(source: str, i: int) -> int:
    j = i + 1
    while source[j] != '"':
        j += 2 if source[j] == "\\" else 1
    return j + 1


def _items(body: str) -> Iterator[str]:
    """Comment lines, whole #[...] attributes and declarations (up to their comma)."""
    lines = iter(body.splitlines())
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("//"):
            yield text
            continue
        while not _balanced(text):
            text += " " + next(lines).strip()
        yield text


def _balanced(text: str) -> bool:
    depth = 0
    for _, ch in _code_chars(text, 0):
        depth += ch in "([{<"
        depth -= ch in ")]}>"
    return depth <= 0 and (not text.startswith("#[") or text.endswith("]"))


def _attribute(item: str, kinds: Sequence[str]) -> dict[str, str | None]:
    """#[clap(a, b = "x", c = 'y')] -> {"a": None, "b": '"x"', "c": "'y'"}; other
    attributes (derive, serde, allow, deprecated) -> {}."""
    match = re.fullmatch(r"#\[\s*(\w+)\s*\((.*)\)\s*\]", item, re.S)
    if match is None or match[1] not in kinds:
        return {}
    settings: dict[str, str | None] = {}
    for part in _split_top(match[2]):
        key, _, value = part.partition("=")
        settings[key.strip()] = value.strip() or None
    return settings


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in _code_chars(text, 0):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _unquote(value: str | None) -> str:
    if value is None:
        return ""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", source)


_AT = "at v3.3.6 (efb94e0d3db6aba9d464bc9a2f83191146203152)"
FACTS: dict[str, dict[str, Any]] = {
    "3.3.6": {
        "limits": {
            "max_concurrent_requests": {
                "flag": "--max-concurrent-requests",
                "default": 128,
                "effect": (
                    "refused, not queued: the router holds a semaphore of this many permits "
                    "and a request that finds none gets HTTP 429 "
                    '{"error":"Model is overloaded","error_type":"overloaded"} (an error '
                    "event after 200 on a streaming route)"
                ),
                "source": (
                    f"router/src/infer/mod.rs:84,111-120,412-413,434; "
                    f"router/src/server.rs:2400-2421 {_AT}"
                ),
            },
            "max_input_tokens": {
                "flag": "--max-input-tokens",
                "default": None,
                "effect": (
                    "HTTP 422 'Input validation error: `inputs` must have less than N tokens. "
                    "Given: M' when prompt tokens > N. Unset: the shard computes "
                    "max_total_tokens - 1. Must be < max_total_tokens (launcher and router "
                    "refuse to start otherwise); with a backend that does not support "
                    "chunking it must also be <= max_batch_prefill_tokens. --max-input-length "
                    "is its legacy name; setting both is a start-up error."
                ),
                "source": (
                    f"router/src/validation.rs:179-185,969-970; router/src/server.rs:2404-2406; "
                    f"launcher/src/main.rs:2095-2107,2152-2159; backends/v3/src/main.rs:164-187; "
                    f"server/text_generation_server/models/flash_causal_lm.py:1578-1579 {_AT}"
                ),
            },
            "max_total_tokens": {
                "flag": "--max-total-tokens",
                "default": None,
                "effect": (
                    "HTTP 422 'Input validation error: `inputs` tokens + `max_new_tokens` must "
                    "be <= N. Given: I `inputs` tokens and K `max_new_tokens`' when I + "
                    "min(max_new_tokens, 1024) > N (a larger max_new_tokens passes and "
                    "generation is continued in 1024-token rounds, ending with finish reason "
                    "length once a round no longer validates). Unset: the shard computes "
                    "min(KV-cache blocks x block size, tokenizer model_max_length, "
                    "max_position_embeddings). Must be <= max_batch_total_tokens."
                ),
                "source": (
                    f"router/src/validation.rs:25,150-177,967-968; router/src/infer/mod.rs:"
                    f"164-190; server/text_generation_server/models/flash_causal_lm.py:"
                    f"1566-1577 {_AT}"
                ),
            },
            "max_batch_prefill_tokens": {
                "flag": "--max-batch-prefill-tokens",
                "default": None,
                "effect": (
                    "start-up constraint, not per request: unset, the launcher computes "
                    "min(compute-optimal size from nvidia-smi's GPU name, else 4096 (10000 "
                    "for qwen2_vl/qwen2_5_vl, 8000 for gemma3), max_position_embeddings, "
                    "what the VRAM allows) — on ROCm there is no nvidia-smi, so 4096 capped "
                    "by max_position_embeddings. The router refuses to start unless "
                    "max_batch_prefill_tokens <= max_batch_total_tokens and (without "
                    "chunking support) >= max_input_tokens: the ROCm image sets "
                    "PREFILL_CHUNKING=0, so on ROCm that rule applies."
                ),
                "source": (
                    f"launcher/src/main.rs:28-46,62-89,1815-1825,2110-2149; Dockerfile_amd:305; "
                    f"server/text_generation_server/models/globals.py:15; "
                    f"backends/v3/src/main.rs:185-190 {_AT}"
                ),
            },
            "max_batch_total_tokens": {
                "flag": "--max-batch-total-tokens",
                "default": None,
                "effect": (
                    "start-up constraint: flash-attention models report their own KV "
                    "capacity and a given value is ignored with a warning ('deprecated for "
                    "Flash Attention models'); start fails if max_total_tokens exceeds "
                    "the capacity ('Not enough memory to handle `max_total_tokens=N`'). "
                    "When given, the launcher refuses max_total_tokens > it."
                ),
                "source": (
                    f"backends/v3/src/lib.rs:59-110,181-182; launcher/src/main.rs:2195-2204; "
                    f"backends/v3/src/main.rs:191-193 {_AT}"
                ),
            },
            "max_client_batch_size": {
                "flag": "--max-client-batch-size",
                "default": 4,
                "effect": (
                    "HTTP 422 'Number of prompts exceeds the maximum allowed batch size of N' "
                    "for a /v1/completions request with more prompts"
                ),
                "source": f"router/src/server.rs:760-772 {_AT}",
            },
            "payload_limit": {
                "flag": "--payload-limit",
                "default": 2000000,
                "effect": "request bodies over it are refused by axum's body limit (HTTP 413)",
                "source": f"router/src/server.rs:2294 {_AT}",
            },
        },
        "api_key": {
            "how": (
                "launcher option --api-key or env API_KEY (clap env). The launcher starts "
                "text-generation-router with '--api-key KEY' on its command line (visible in "
                "ps and /proc/PID/cmdline) and also passes its whole environment to the router "
                "and the Python shards (so API_KEY, when given by env, reaches them too). The "
                "router accepts a request only with 'Authorization: Bearer KEY' (compared "
                "case-insensitively), else 401 with an empty body."
            ),
            "logged": (
                'yes, in clear: the launcher logs tracing::info!("{:#?}", args) at start-up, '
                "which prints 'api_key: Some(\"KEY\")' (and ngrok_authtoken) unredacted; "
                "Args derives Debug, no custom impl."
            ),
            "source": (
                f"launcher/src/main.rs:580-582,848-849,861-862,1942-1946,1957,1971-1973,2075; "
                f"router/src/server.rs:2209-2231 {_AT}"
            ),
        },
    },
}


if __name__ == "__main__":
    sys.exit(main())
