"""Secret-looking values: what is caught, what is deliberately left alone, and that the
catching never prints the value. All values here are fake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from amdfleet.catalog.engines import _MI355_FUSIONS
from amdfleet.config import load_stack_file, parse_stack
from amdfleet.errors import ConfigError
from amdfleet.secretscan import REDACTED, describe, find_secrets, redact

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(
    [*(ROOT / "stacks").glob("Pulumi.*.yaml"), *(ROOT / "tests/unit/stacks").glob("*.yaml")]
)

NOT_SECRETS = [
    _MI355_FUSIONS,  # seed 002's --compilation-config JSON
    '{"cudagraph_mode":"FULL_AND_PIECEWISE"}',
    "amd/Llama-3.1-405B-Instruct-FP8-KV",
    "amd/Llama-3.3-70B-Instruct-MXFP4-Preview",
    "meta-llama/Llama-3.3-70B-Instruct",
    "RedHatAI/Meta-Llama-3.1-405B-Instruct-FP8-dynamic",
    "nvidia/Llama-3_3-Nemotron-Super-49B-v1",
    "rocm/vllm:rocm6.4.1_vllm_0.10.1_20250909",
    "rocm/sgl-dev:v0.4.9.post2-rocm630-mi30x-20250716",
    "ghcr.io/huggingface/text-generation-inference:3.3.4-rocm",
    "registry.example.com/vllm-aiter@sha256:" + "0f" * 32,  # a SHA-256 digest
    "0123456789abcdef0123456789abcdef01234567",  # a git commit: an address, not a key
    "SHA256:" + "Ab3dEf9hIj2lMn8pQr4tUv6xYz0AbCdEfGhIjKlMnOp",  # a host-key fingerprint
    "Llama 3.3 70B FP8 on 1x MI355X, vLLM (AITER build), seed 002",
    "Basic benchmark of the token budget",
    "/data/huggingface/hub/models--amd--Llama-3.1-405B-Instruct-FP8-KV/snapshots/5d4f8a1b",
    "https://hf-mirror.example.com",
    "expandable_segments:True,max_split_size_mb:512",
    "VLLM_ROCM_USE_AITER_FP4_ASM_GEMM",
    "VeryLongCamelCaseIdentifierWithoutAnyDigits",
    "task-sk-llama-benchmark-runs",  # a stack-style name containing 'sk-'
    "hf_token",  # a secret's *name*, not a token
]

SECRETS = [
    ("hf_AmdfleetTestOnlyNotARealToken0001", "Hugging Face token"),
    ("sk-proj-AmdfleetTestOnly0NotReal0Key0001", "API key"),
    ("ghp_AmdfleetTestOnlyNotARealToken00001", "GitHub token"),
    ("github_pat_AmdfleetTestOnly_NotARealToken0001", "GitHub token"),
    ("AKIAAMDFLEETTEST0001", "AWS access key id"),
    ("xoxb-0000-amdfleet-test", "Slack token"),
    ("glpat-AmdfleetTestOnly0001", "GitLab token"),
    ("dop_v1_" + "0a" * 32, "DigitalOcean token"),
    ("Authorization: Bearer amdfleet.test.only", "bearer token"),
    ("https://user:pass1234@hf-mirror.example.com", "credentials inside a URL"),
    ("https://hf-mirror.example.com/?access_token=abc123", "credential in a URL query"),
    ("a3f9c1e7b5d2a80643f9c1e7b5d2a80643f9c1e7b5d2a806", "random-looking"),  # rand -hex 24
    ("Zq7Xv2Lm9Tk4Rb8Wn3Hs6Pd1Fg5Jc0Ya", "random-looking"),
    ("Zq7X+v2Lm9Tk4Rb8/Wn3Hs6Pd1Fg5Jc0YaQ8wE2rT==", "random-looking"),  # base64
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
]


@pytest.mark.parametrize("value", NOT_SECRETS)
def test_words_ids_digests_and_json_are_not_secrets(value: str) -> None:
    assert describe(value) is None
    assert redact(value) == value


@pytest.mark.parametrize(("value", "kind"), SECRETS)
def test_secret_shapes_are_named_and_redacted(value: str, kind: str) -> None:
    why = describe(value)
    assert why is not None and kind in why
    assert REDACTED in redact(value)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_stacks_hold_nothing_secret_looking(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    sections = {k.split(":", 1)[1]: v for k, v in document["config"].items()}
    assert find_secrets(sections) == []
    load_stack_file(str(path))  # and they still load


@pytest.mark.parametrize(
    ("args", "flagged", "kind"),
    [
        (["--api-key", "x1"], "engine.extra_args[0]", "--api-key"),
        (["--enforce-eager", "--hf_token=abc"], "engine.extra_args[1]", "--hf_token"),
        (["--token"], "engine.extra_args[0]", "--token"),
        (["--admin-api-key", "abc"], "engine.extra_args[0]", "--admin-api-key"),
        (["--db-password", "abc"], "engine.extra_args[0]", "--db-password"),
    ],
)
def test_key_flags_are_refused_whatever_their_value(
    args: list[str], flagged: str, kind: str
) -> None:
    found = find_secrets({"engine": {"extra_args": args}})
    assert [f.path for f in found] == [flagged]
    assert kind in found[0].why


@pytest.mark.parametrize(
    "args",
    [
        ["--tokenizer", "amd/Llama-3.1-8B"],
        ["--max-num-batched-tokens", "32768"],
        ["--ssl-keyfile", "/etc/ssl/key.pem"],
        ["--compilation-config", _MI355_FUSIONS],
        ["--kv-cache-dtype", "fp8"],
    ],
)
def test_ordinary_flags_pass(args: list[str]) -> None:
    assert find_secrets({"engine": {"extra_args": args}}) == []


@pytest.mark.parametrize(
    "name", ["HF_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "MY_SECRET"]
)
def test_secret_named_variables_are_refused(name: str) -> None:
    found = find_secrets({"engine": {"extra_env": {name: "plain"}}})
    assert [f.path for f in found] == [f"engine.extra_env.{name}"]


@pytest.mark.parametrize(
    "name", ["VLLM_CACHE_ROOT", "HF_HOME", "NCCL_IB_HCA", "TOKENIZERS_PARALLELISM"]
)
def test_ordinary_variables_pass(name: str) -> None:
    assert find_secrets({"engine": {"extra_env": {name: "/var/cache/x"}}}) == []


def test_a_long_name_where_a_secret_name_belongs_is_refused_unechoed() -> None:
    value = "apiKey" + "x" * 70
    with pytest.raises(ConfigError) as caught:
        parse_stack("s", {"serving": {"api_key_secret": value}})
    assert "serving.api_key_secret" in caught.value.paths
    assert value not in str(caught.value)


def test_the_generic_validation_message_never_quotes_a_secret() -> None:
    """A wrong value elsewhere is quoted ('got ...'), a secret-looking one is not."""
    token = "hf_AmdfleetTestOnlyNotARealToken0001"
    with pytest.raises(ConfigError) as caught:
        parse_stack("s", {"engine": {"network": token, "runtime": "dockr"}})
    text = str(caught.value)
    assert token not in text
    assert "engine.network" in caught.value.paths and "'dockr'" in text
