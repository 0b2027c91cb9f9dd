"""Secret-looking values where a stack file holds plain text: found, named, never shown.

A secret belongs in an encrypted config key (``pulumi config set --secret NAME``) that
the stack only *names*. A value pasted anywhere else (an ``--api-key`` in
``engine.extra_args``, ``HF_TOKEN`` in ``engine.extra_env``, a password inside
``weights.hub_endpoint``, the key itself where a secret's name belongs) would flow into
``launch.sh``, ``plan.json``, plain stack outputs, the plan printout and ``ps``. This
module finds such values in the raw stack sections before validation, so a stack holding
one is rejected before anything is planned; the issues it returns name the field path
and the way to store the value, never the value. :func:`redact` blanks found values in
any other text (a validation message that quotes its input).

What counts as secret-looking:

- a known token prefix with a token body: ``hf_``, ``sk-``, ``ghp_``/``gho_``/...,
  ``github_pat_``, ``AKIA``/``ASIA``, ``xox?-``, ``glpat-``, ``dop_v1_``, a JWT, a PEM
  private key, ``Bearer``/``Basic`` credentials;
- credentials in a URL: userinfo (``https://user:pass@host``) or a query parameter
  named like a secret (``?token=...``, ``?hf_token_x=...``) or a signature (``?sig=``);
- a long random-looking run: 20+ letters and digits mixed with high entropy, a long
  base64 run, or 24+ hex digits;
- in ``engine.extra_args``, a flag named like a secret (``--api-key``, ``--hf-token``,
  ``--token``, ``--password``, ...), whatever its value;
- in ``engine.extra_env`` and ``fabric.extra_env``, a variable named like a secret,
  whatever its value (:func:`names_secret`);
- in a secret-name field, anything that is not a short config key name.

A name (a variable, a flag, a URL query parameter) names a secret by the words it holds
(:func:`names_secret`; :func:`name_words` splits it at ``_``, ``-``, ``.``, digits and
case changes). Anywhere in the name: TOKEN, SECRET, PASSWORD/PASSWD/PASSPHRASE,
CREDENTIAL(S), API KEY, PRIVATE KEY, ACCESS KEY, SECRET KEY, apart or glued (``APIKEY``,
``PGPASSWORD``, ``NGROK_AUTHTOKEN``). As the last word, but for a variant's trailing
digits and single letters (``OPENAI_KEY_2``): KEY, AUTH, AUTHORIZATION, and PASS or PWD
after another word (``DB_PASS``; ``PWD`` alone is the shell's directory). So
``HF_TOKEN_x``, ``MY_HF_TOKEN`` and ``hfToken`` are secrets as ``HF_TOKEN`` is. Not
secrets: a word is whole (TOKENS, TOKENIZER and DETOKENIZE are not TOKEN, PASSES is not
PASS, KEYFILE is not KEY); a bare KEY or AUTH before another word (``SSH_KEY_PATH``,
``AUTH_MODE``); a truncated word (``HF_TOKE``: nothing says it is one); a switch about a
secret (``--allow-credentials``, ``ENABLE_AUTH``); TOKEN beside a word of counting
(``PER_TOKEN``, ``NEW_TOKEN_RATIO``, ``TOKEN_THRESHOLD``, ``TOKEN_IDS``), which is a
model's token. ``tests/unit/test_secret_names.py`` judges every variable and flag the
pinned engines' manifests list, the true positives named.

Decided exceptions, so committed stacks keep loading: a run of exactly 40 or 64 hex
digits is a content address (a git commit, a SHA-256 image or file digest), not a
secret, and neither is a ``SHA256:``/``sha256:`` fingerprint or digest anywhere;
``fleet.hosts[*].host_key`` is a *public* key or its fingerprint, so only the prefix and
URL rules apply there, not the entropy rule. JSON values (vLLM's
``--compilation-config``), model repo ids and image references are words, short runs
and punctuation, which the entropy rule leaves alone.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amdfleet.errors import field_path
from amdfleet.findings import Finding, config_issue

SECRET_NAME_FIELDS: tuple[tuple[str, ...], ...] = (
    ("serving", "api_key_secret"),
    ("weights", "hf_token_secret"),
    ("fleet", "cloud", "api_token_secret"),
)
"""Fields that hold the *name* of a secret config key (paths within the stack)."""

REDACTED = "<redacted>"

Loc = tuple[str | int, ...]

_ENV_FIELDS: tuple[Loc, ...] = (("engine", "extra_env"), ("fabric", "extra_env"))

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

_PREFIXES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{20,}")),
    ("an API key (sk-...)", re.compile(r"\bsk-(?=[\w-]*[0-9])(?=[\w-]*[A-Z])[\w-]{16,}")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}")),
    ("a GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}")),
    ("a DigitalOcean token", re.compile(r"\bdo[por]_v1_[A-Za-z0-9]{16,}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    (
        "a basic-auth credential",
        re.compile(r"\bBasic\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{12,}=*"),
    ),
)
_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://([^/\s@?#]+)@")
_URL_QUERY = re.compile(r"[?&]([A-Za-z0-9_.-]+)=([^&#\s]+)")
_URL_SIGNATURES = (["sig"], ["signature"])  # a signed URL's signature (?sig=, ?X-Signature=)
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{20,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{32,}={0,2}")
# A host-key fingerprint or a digest names public or content-addressed data.
_DIGEST = re.compile(r"\b(?:SHA256|sha256|sha512|sha1):[A-Za-z0-9+/]+=*")
_HEX = re.compile(r"[0-9a-fA-F]+")
_WORD = re.compile(r"[a-z]{4,}|[A-Z]{4,}|[A-Z][a-z]{3,}")

_NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Words that name a secret wherever they stand, also glued to others (PGPASSWORD).
_SECRET_STEMS = (
    *("password", "passwd", "passphrase", "secret", "credential"),
    *("apikey", "privatekey", "accesskey"),
)
_KEY_KINDS = frozenset({"api", "private", "access", "secret"})  # API_KEY_FILE, not SSH_KEY_PATH
# Words that name a secret as the last word only: SSH_KEY_PATH is a path, AUTH_MODE a
# mode; PASS and PWD after another word (DB_PASS), as PWD alone is the shell's directory.
_LAST_WORDS = frozenset({"key", "auth", "authorization"})
_LAST_WORDS_AFTER_ONE = frozenset({"pass", "pwd"})
# A switch about a secret holds none: --allow-credentials, ENABLE_AUTH, REQUIRE_PASSWORD.
_SWITCHES = frozenset({"allow", "enable", "disable", "require", "use", "no", "skip"})
# TOKEN beside one of these is a model's token (PER_TOKEN, NEW_TOKEN_RATIO, INTER_TOKEN_
# LATENCY), not a credential.
_COUNTED_BEFORE = frozenset(
    {"per", "new", "max", "min", "num", "first", "last", "next", "inter", "bos", "eos"}
    | {"pad", "unk", "special", "stop", "prompt", "input", "output", "image", "video", "audio"}
)
_COUNTED_AFTER = frozenset(
    {"ratio", "threshold", "id", "ids", "usage", "count", "counts", "budget", "limit", "level"}
    | {"group", "len", "length", "size", "rate", "num", "per", "latency", "distribution", "map"}
)

HINT = (  # how to store a secret instead
    "store the value in an encrypted config key and name that key in the stack: "
    '`printf %s "$VALUE" | pulumi config set --secret NAME` (or run `pulumi config set '
    "--secret NAME` and paste at its prompt); a value on a command line lands in shell "
    "history"
)

_HINT_API_KEY = (
    "remove it: amdfleet gives the engine the API key from the secret named by "
    'serving.api_key_secret — `printf %s "$KEY" | pulumi config set --secret apiKey`'
)
_HINT_ENV = (
    "remove it: amdfleet hands an engine two secrets only, the API key (serving."
    "api_key_secret) and the Hugging Face token (weights.hf_token_secret, for the weights "
    "download), each named by the stack and stored with `pulumi config set --secret NAME`; "
    "any other value in a stack's environment is written to the env file, plan.json and "
    "the plain stack outputs"
)
_HINT_HF_TOKEN = (
    "remove it: set weights.hf_token_secret: hfToken and store the token with "
    '`printf %s "$HF_TOKEN" | pulumi config set --secret hfToken`'
)


@dataclass(frozen=True)
class SecretFinding:
    """A secret-looking value at a field path. ``values`` are what to blank elsewhere."""

    path: str
    why: str
    values: tuple[str, ...]
    hint: str = HINT

    def issue(self) -> Finding:
        """The finding as a config issue: the path and the reason, never the value."""
        return config_issue(self.path, f"holds {self.why}; a stack file is not secret", self.hint)


def describe(value: str) -> str | None:
    """Why ``value`` looks like a secret (e.g. 'a Hugging Face token'), or None."""
    return _describe(value, entropy=True)


def names_secret(name: str) -> bool:
    """Whether a variable, flag or query parameter named ``name`` carries a secret, by
    the words it holds (see the module docstring): ``HF_TOKEN_x``, ``OPENAI_API_KEY_2``,
    ``--admin-api-key``, ``access_token`` do; ``TOKENIZERS_PARALLELISM``,
    ``MAX_TOTAL_TOKENS``, ``SGLANG_INIT_NEW_TOKEN_RATIO``, ``--ssl-keyfile`` do not."""
    words = name_words(name)
    last = len(_without_trailing_marks(words)) - 1
    return any(_secret_word(words, i, i == last) for i in range(len(words)))


def name_words(name: str) -> list[str]:
    """``name``'s words, lower case: split at ``_``, ``-``, ``.``, digits and case changes
    (``HF_TOKEN_x`` → hf, token, x; ``hfToken`` → hf, token; ``HFToken`` → hf, token)."""
    return [word.lower() for word in _NAME_WORD.findall(name)]


def find_secrets(sections: Mapping[str, Any]) -> list[SecretFinding]:
    """Every secret-looking value in raw stack sections (``{"engine": {...}, ...}``).

    Values of any type are accepted (the sections are not validated yet); only strings
    are inspected. The findings' paths use the schema's notation (``engine.extra_args[2]``).
    """
    findings: list[SecretFinding] = []
    for loc, value in _leaves(sections, ()):
        findings.extend(_inspect(loc, value))
    return findings


def redact(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with each of ``values`` and anything else secret-looking blanked."""
    # Short values are left: blanking "abc" everywhere would garble the message instead.
    for value in sorted({v for v in values if len(v) >= 6}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for _, pattern in _PREFIXES:
        text = pattern.sub(REDACTED, text)
    text = _URL_USERINFO.sub(lambda m: m.group(0).replace(m.group(1), REDACTED), text)
    text = _URL_QUERY.sub(_redact_query, text)
    for start, end in sorted(_random_spans(text), reverse=True):
        text = text[:start] + REDACTED + text[end:]
    return text


def screen_issues(issues: Sequence[Finding], findings: Sequence[SecretFinding]) -> list[Finding]:
    """The issues to report when ``findings`` were made: each finding once, other issues
    at a flagged path dropped (they would repeat it), and every text redacted."""
    flagged = {f.path for f in findings}
    values = [v for f in findings for v in f.values]
    kept = [f.issue() for f in findings]
    kept += [i for i in issues if i.subject not in flagged]
    return [
        config_issue(redact(i.subject, values), redact(i.detail, values), redact(i.hint, values))
        for i in kept
    ]


# --- helpers ---------------------------------------------------------------------------


def _leaves(value: Any, loc: Loc) -> Iterator[tuple[Loc, Any]]:
    """Every dict/list node and string leaf, with its location; dict keys too."""
    yield loc, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, (*loc, index))


def _inspect(loc: Loc, value: Any) -> list[SecretFinding]:
    path = field_path(loc)
    if isinstance(value, Mapping):
        bad_keys = [str(k) for k in value if describe(str(k))]
        if bad_keys:
            return [
                SecretFinding(path or "stack", "a key that looks like a secret", tuple(bad_keys))
            ]
        if loc in _ENV_FIELDS:
            return _inspect_env(loc, value)
        return []
    if isinstance(value, list | tuple):
        return _inspect_args(loc, value) if loc == ("engine", "extra_args") else []
    if not isinstance(value, str):
        return []
    if loc in SECRET_NAME_FIELDS:
        return _inspect_name(path, value)
    if len(loc) > 2 and loc[:2] in (("engine", "extra_args"), *_ENV_FIELDS):
        return []  # inspected as a whole, from the list or mapping
    public_key = len(loc) == 4 and loc[:2] == ("fleet", "hosts") and loc[3] == "host_key"
    why = _describe(value, entropy=not public_key)
    return [SecretFinding(path, why, (value,))] if why else []


def _inspect_name(path: str, value: str) -> list[SecretFinding]:
    if _NAME_RE.fullmatch(value) and not describe(value):
        return []
    why = describe(value) or "something that is not a config key name"
    return [
        SecretFinding(
            path,
            f"{why} where the *name* of a secret config key belongs (letters, digits and "
            "underscores, at most 64, starting with a letter, e.g. apiKey)",
            (value,),
        )
    ]


def _inspect_args(loc: Loc, args: Sequence[Any]) -> list[SecretFinding]:
    findings = []
    words = [a if isinstance(a, str) else "" for a in args]
    consumed = -1  # the index of a flag's value, reported with its flag
    for index, word in enumerate(words):
        flag, eq, inline = word.partition("=")
        nxt = words[index + 1] if index + 1 < len(words) else ""
        if word.startswith("-") and names_secret(flag):
            value = inline if eq else ("" if nxt.startswith("-") else nxt)
            consumed = index + 1 if value and not eq else consumed
            why = f"a key on the command line ({flag}), visible in `ps` and launch.sh"
            hint = _hint_for(flag)
            findings.append(SecretFinding(field_path((*loc, index)), why, (value,), hint))
            continue
        reason = describe(word)
        if reason and index != consumed:
            findings.append(SecretFinding(field_path((*loc, index)), reason, (word,)))
    return findings


def _inspect_env(loc: Loc, env: Mapping[Any, Any]) -> list[SecretFinding]:
    findings = []
    for name, value in env.items():
        text = value if isinstance(value, str) else ""
        path = field_path((*loc, str(name)))
        if names_secret(str(name)):
            why = f"a secret in the environment ({name}), written to the env file and plan"
            findings.append(SecretFinding(path, why, (text,), _hint_for(str(name), _HINT_ENV)))
            continue
        reason = describe(text)
        if reason:
            findings.append(SecretFinding(path, reason, (text,)))
    return findings


def _hint_for(name: str, other: str = HINT) -> str:
    """The fix for a flag or variable by its name: the Hugging Face token and the API key
    have their own secret fields; anything else gets ``other``."""
    words = name_words(name)
    if "hf" in words or "hugging" in words or "hub" in words:
        return _HINT_HF_TOKEN
    if ("api", "key") in itertools.pairwise(words) or "apikey" in words:
        return _HINT_API_KEY
    return other


def _without_trailing_marks(words: list[str]) -> list[str]:
    """``words`` without the digits and single letters that end a variant (KEY_2, TOKEN_x)."""
    end = len(words)
    while end > 0 and (words[end - 1].isdigit() or len(words[end - 1]) == 1):
        end -= 1
    return words[:end]


def _secret_word(words: list[str], index: int, last: bool) -> bool:
    """Whether ``words[index]`` names a secret where it stands (``last``: it ends the
    name but for a variant's digits and letters)."""
    word = words[index]
    before = words[index - 1] if index > 0 else ""
    after = words[index + 1] if index + 1 < len(words) else ""
    if before in _SWITCHES:
        return False
    if any(stem in word for stem in _SECRET_STEMS):
        return True
    if word == "key" and before in _KEY_KINDS:
        return True
    if last and (word in _LAST_WORDS or (word in _LAST_WORDS_AFTER_ONE and index > 0)):
        return True
    # TOKEN as a credential (HF_TOKEN, NGROK_AUTHTOKEN), not a model's counted token.
    return word.endswith("token") and before not in _COUNTED_BEFORE and after not in _COUNTED_AFTER


def _describe(value: str, entropy: bool) -> str | None:
    for why, pattern in _PREFIXES:
        if pattern.search(value):
            return why
    if _URL_USERINFO.search(value):
        return "credentials inside a URL (user:password@)"
    if any(_secret_query(m) for m in _URL_QUERY.finditer(value)):
        return "a credential in a URL query"
    if entropy and _random_spans(value):
        return "a long random-looking string"
    return None


def _secret_query(match: re.Match[str]) -> bool:
    """Whether a URL query parameter (``?access_token=...``) is named like a secret."""
    name = match.group(1)
    return names_secret(name) or name_words(name)[-1:] in _URL_SIGNATURES


def _redact_query(match: re.Match[str]) -> str:
    if not _secret_query(match):
        return match.group(0)
    return match.group(0)[: match.start(2) - match.start(0)] + REDACTED


def _random_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds random-looking runs, outside digests; disjoint, in order."""
    digests = [m.span() for m in _DIGEST.finditer(text)]
    spans: list[tuple[int, int]] = []
    for pattern in (_ALNUM_RUN, _BASE64_RUN):
        for m in pattern.finditer(text):
            inside = any(a <= m.start() and m.end() <= b for a, b in digests)
            if not inside and _random(m.group(0)):
                spans.append(m.span())
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _random(run: str) -> bool:
    """Whether a run of token characters looks generated rather than written."""
    if _HEX.fullmatch(run):
        # 40 and 64 hex digits are a git commit and a SHA-256 digest: addresses, not keys.
        return len(run) >= 24 and len(run) not in (40, 64) and _entropy(run) >= 3.0
    core = run.rstrip("=")
    has_upper = any(c.isupper() for c in core)
    has_lower = any(c.islower() for c in core)
    if not any(c.isdigit() for c in core) or _wordy(core) > 0.4:
        return False  # identifiers and prose: letters only, or mostly words
    if "+" in core or "/" in core:
        return has_upper and has_lower and _entropy(core) >= 4.2
    return _entropy(core) >= 3.7


def _wordy(text: str) -> float:
    """The share of ``text`` in word-like letter runs ('Instruct', 'REPLACE', 'host')."""
    return sum(len(m.group(0)) for m in _WORD.finditer(text)) / len(text)


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
