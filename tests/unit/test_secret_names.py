"""Which variable, flag and URL query names carry a secret (``secretscan.names_secret``):
judged by the words a name holds wherever they stand, not by its suffix, with no false
alarm on the names amdfleet, its committed stacks, its seeds and its pinned engines use
in plain text. All values here are fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from amdfleet.catalog.engines import RECIPES
from amdfleet.catalog.releases import RELEASES
from amdfleet.config import load_stack_file, parse_stack
from amdfleet.engines.manifest import manifest
from amdfleet.errors import ConfigError
from amdfleet.plan import plan
from amdfleet.secretscan import REDACTED, describe, find_secrets, name_words, names_secret, redact

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(
    [*(ROOT / "stacks").glob("Pulumi.*.yaml"), *(ROOT / "tests/unit/stacks").glob("*.yaml")]
)

SECRET_NAMES = [
    # a suffix, as before
    "HF_TOKEN",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "DB_PASSWORD",
    "MY_SECRET",
    "HTTP_AUTH",
    "KEY",
    # the word anywhere: a variant, a prefix, another case (issue 22, item 6)
    "HF_TOKEN_x",
    "HF_TOKEN_X",
    "hf_token_x",
    "HF_TOKEN_2",
    "HF_TOKEN_OLD",
    "MY_HF_TOKEN",
    "hfToken",
    "HFToken",
    "OPENAI_API_KEY_x",
    "OPENAI_API_KEY_2",
    "OPENAI_KEY_x",
    "API_KEY_FILE",
    "DB_PASSWORD_x",
    "MY_SECRET_x",
    "CLIENT_SECRETS",
    "AWS_SESSION_TOKEN_x",
    "AWS_ACCESS_KEY_ID",
    "SSH_PRIVATE_KEY_PEM",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DB_CREDENTIAL_2",
    "KEYSTORE_PASSPHRASE",
    "PROXY_AUTHORIZATION",
    # glued words
    "PGPASSWORD",
    "MYAPIKEY",
    "NGROK_AUTHTOKEN",
    "GHTOKEN",
    # PASS and PWD after another word
    "DB_PASS",
    "DB_PASSWD",
    "DB_PWD",
    # flags and query parameters, by the same judge
    "--api-key",
    "--hf-token",
    "--token",
    "--password",
    "--admin-api-key",
    "--ngrok-authtoken",
    "--db-password",
    "access_token",
]

PLAIN_NAMES = [
    # named in issue 22 as used in plain env by committed stacks and seeds
    "VLLM_USE_TRITON_FLASH_ATTN",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "TOKENIZERS_PARALLELISM",
    "MAX_TOTAL_TOKENS",
    "NCCL_IB_HCA",
    "NCCL_SOCKET_IFNAME",
    "NCCL_IB_GID_INDEX",
    "RCCL_MSCCL_ENABLE",
    "GLOO_SOCKET_IFNAME",
    "VLLM_ROCM_USE_AITER",
    "VLLM_ROCM_USE_AITER_FP4_ASM_GEMM",
    # what seeds 000-004 export (export X=... / -e X), HF_TOKEN aside
    "HF_HOME",
    "NCCL_DEBUG",
    "PYTORCH_ROCM_ARCH",
    "SAFETENSORS_FAST_GPU",
    "VLLM_RPC_TIMEOUT",
    "VLLM_USE_V1",
    # a word is whole: TOKENS, TOKENIZER, PASSES, KEYFILE are other words
    "MAX_BATCH_PREFILL_TOKENS",
    "SGLANG_DETOKENIZER_MAX_STATES",
    "TOKENIZER_CONFIG_PATH",
    "VLLM_USE_FASTOKENS",
    "VLLM_ENABLE_PREGRAD_PASSES",
    "--ssl-keyfile",
    "--tokenizer",
    "--max-num-batched-tokens",
    # a model's tokens, counted
    "SGLANG_INIT_NEW_TOKEN_RATIO",
    "SGLANG_USE_AITER_FP8_PER_TOKEN",
    "VLLM_MULTI_STREAM_GEMM_TOKEN_THRESHOLD",
    "SGLANG_SYNC_TOKEN_IDS_ACROSS_TP",
    "--return-tokens-as-token-ids",
    "--bucket-inter-token-latency",
    # KEY and AUTH before another word; switches about a secret; the shell's PWD
    "SSH_KEY_PATH",
    "SGLANG_ROUTING_KEY_POLICY_DEBUG_LOG",
    "AUTH_MODE",
    "ENABLE_AUTH",
    "--allow-credentials",
    "PWD",
    "OLDPWD",
    "max_tokens",
    # a truncated word: nothing says it is one (the mutation property stops tracking it)
    "HF_TOKE",
    "OPENAI_API_KE",
]

# Every variable and flag (with aliases and the variables flags read) of the pinned
# engines' manifests that carries a secret; every other one is plain.
MANIFEST_SECRETS = {
    "vllm": {"VLLM_API_KEY", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "--api-key", "--hf-token"},
    "sglang": {
        "SGLANG_DIFFUSION_SLACK_TOKEN",  # a Slack bot token for SGLang's CI reports
        "SGLANG_S3_ACCESS_KEY_ID",
        "SGLANG_S3_SECRET_ACCESS_KEY",
        "--api-key",
        "--admin-api-key",
    },
    "tgi": {
        "API_KEY",
        "HF_TOKEN",
        "HF_API_TOKEN",
        "NGROK_AUTHTOKEN",
        "--api-key",
        "--ngrok-authtoken",
    },
}


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_name_holding_a_secret_word_anywhere_carries_a_secret(name: str) -> None:
    assert names_secret(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names_are_no_false_alarm(name: str) -> None:
    assert not names_secret(name)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("HF_TOKEN_x", ["hf", "token", "x"]),
        ("hfToken", ["hf", "token"]),
        ("HFToken", ["hf", "token"]),
        ("--admin-api-key", ["admin", "api", "key"]),
        (
            "VLLM_ROCM_USE_AITER_FP4_ASM_GEMM",
            ["vllm", "rocm", "use", "aiter", "fp", "4", "asm", "gemm"],
        ),
        ("x.api_key", ["x", "api", "key"]),
    ],
)
def test_names_split_at_separators_digits_and_case(name: str, words: list[str]) -> None:
    assert name_words(name) == words


@pytest.mark.parametrize("engine", sorted(MANIFEST_SECRETS))
def test_every_name_a_pinned_engine_reads_is_judged(engine: str) -> None:
    """A new manifest with a new secret-looking name fails here until it is decided."""
    versions = sorted({r.version for r in RELEASES if r.engine == engine})
    names: set[str] = set()
    for version in versions:
        found = manifest(engine, version)
        assert found is not None, f"no manifest for {engine} {version}"
        names |= found.env_known | set(found.env_deprecated)
        for spec in found.flags:
            names |= {spec.name, *spec.aliases, *([spec.env] if spec.env else [])}
    assert len(names) > 50  # the whole manifest, not an empty one
    assert {n for n in names if names_secret(n)} == MANIFEST_SECRETS[engine]


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_amdfleet_passes_secrets_only_under_secret_names(path: Path) -> None:
    """Every committed stack's plan: each plain variable of every node (recipes, the
    stack's extra_env, amdfleet's own) is plain by name, each secret one is secret."""
    resolved = plan(load_stack_file(str(path)).spec)
    for node in resolved.nodes:
        assert [n for n in node.env if names_secret(n)] == []
        assert all(names_secret(n) for n in node.secret_env)
    if resolved.fabric is not None:
        assert [n for n in resolved.fabric.extra_env if names_secret(n)] == []


def test_no_recipe_variable_is_judged_a_secret() -> None:
    names = {name for recipe in RECIPES for name in recipe.env}
    assert names and [n for n in names if names_secret(n)] == []


@pytest.mark.parametrize("name", ["HF_TOKEN_x", "MY_HF_TOKEN", "hf_token_x", "OPENAI_API_KEY_2"])
@pytest.mark.parametrize("section", ["engine", "fabric"])
def test_a_variant_of_a_secret_variable_is_refused_by_field_and_never_echoed(
    name: str, section: str
) -> None:
    value = "pw0f1e2d3c4b5a"  # only its name says it is a secret
    with pytest.raises(ConfigError) as caught:
        parse_stack("s", {section: {"extra_env": {name: value}}})
    assert f"{section}.extra_env.{name}" in caught.value.paths
    text = str(caught.value)
    assert value not in text
    assert "a secret in the environment" in text


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("MY_HF_TOKEN", "weights.hf_token_secret"),
        ("OPENAI_API_KEY_2", "serving.api_key_secret"),
        ("DB_PASSWORD_x", "two secrets only"),
    ],
)
def test_a_refused_variable_says_where_its_secret_belongs(name: str, hint: str) -> None:
    found = find_secrets({"engine": {"extra_env": {name: "pw0f1e2d3c4b5a"}}})
    assert [f.path for f in found] == [f"engine.extra_env.{name}"]
    assert hint in found[0].issue().hint


def test_a_variant_key_flag_is_refused_whatever_its_value() -> None:
    found = find_secrets({"engine": {"extra_args": ["--my-hf-token", "plain"]}})
    assert [f.path for f in found] == ["engine.extra_args[0]"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h.example/?hf_token_x=abc123", "https://h.example/?hf_token_x=" + REDACTED),
        (
            "https://h.example/?X-Amz-Signature=ab12",
            "https://h.example/?X-Amz-Signature=" + REDACTED,
        ),
        (
            "https://h.example/x?max_tokens=5&key=ab12",
            "https://h.example/x?max_tokens=5&key=" + REDACTED,
        ),
    ],
)
def test_a_url_query_named_like_a_secret_is_found_and_blanked(url: str, shown: str) -> None:
    assert describe(url) == "a credential in a URL query"
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url", ["https://h.example/?max_tokens=5", "https://h.example/?tokenizer=x"]
)
def test_a_url_query_named_plainly_is_left_alone(url: str) -> None:
    assert describe(url) is None
    assert redact(url) == url
