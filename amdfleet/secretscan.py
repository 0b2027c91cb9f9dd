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
  named like a key (``?token=...``);
- a long random-looking run: 20+ letters and digits mixed with high entropy, a long
  base64 run, or 24+ hex digits;
- in ``engine.extra_args``, a flag that carries a key (``--api-key``, ``--hf-token``,
  ``--token``, ``--password``, ...), whatever its value;
- in ``engine.extra_env``, a variable named like a secret (``*_TOKEN``, ``*_KEY``,
  ``*_SECRET``, ``*PASSWORD*``, ...);
- in a secret-name field, anything that is not a short config key name.

Decided exceptions, so committed stacks keep loading: a run of exactly 40 or 64 hex
digits is a content address (a git commit, a SHA-256 image or file digest), not a
secret, and neither is a ``SHA256:``/``sha256:`` fingerprint or digest anywhere;
``fleet.hosts[*].host_key`` is a *public* key or its fingerprint, so only the prefix and
URL rules apply there, not the entropy rule. JSON values (vLLM's
``--compilation-config``), model repo ids and image references are words, short runs
and punctuation, which the entropy rule leaves alone.
"""

from __future__ import annotations

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
_URL_SECRET_QUERY = re.compile(
    r"[?&](?:[A-Za-z0-9_-]*(?:token|key|secret|password|passwd|sig|signature|auth))"
    r"=([^&#\s]+)",
    re.IGNORECASE,
)
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{20,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{32,}={0,2}")
# A host-key fingerprint or a digest names public or content-addressed data.
_DIGEST = re.compile(r"\b(?:SHA256|sha256|sha512|sha1):[A-Za-z0-9+/]+=*")
_HEX = re.compile(r"[0-9a-fA-F]+")
_WORD = re.compile(r"[a-z]{4,}|[A-Z]{4,}|[A-Z][a-z]{3,}")

_KEY_FLAG_WORDS = ("key", "token", "password", "passwd", "secret", "credential", "credentials")
_SECRET_ENV = re.compile(
    r"(?:^|_)(?:TOKEN|KEY|SECRET|APIKEY|CREDENTIALS?|AUTH)$|PASSWORD|PASSWD|SECRET",
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
    text = _URL_SECRET_QUERY.sub(lambda m: m.group(0).replace(m.group(1), REDACTED), text)
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


Loc = tuple[str | int, ...]


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
        if loc == ("engine", "extra_env"):
            return _inspect_env(loc, value)
        return []
    if isinstance(value, list | tuple):
        return _inspect_args(loc, value) if loc == ("engine", "extra_args") else []
    if not isinstance(value, str):
        return []
    if loc in SECRET_NAME_FIELDS:
        return _inspect_name(path, value)
    if len(loc) > 2 and loc[:2] in (("engine", "extra_args"), ("engine", "extra_env")):
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
        if word.startswith("-") and _carries_key(flag):
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
        if _SECRET_ENV.search(str(name).upper()):
            why = f"a secret in the environment ({name}), written to the env file and plan"
            findings.append(SecretFinding(path, why, (text,), _hint_for(str(name))))
            continue
        reason = describe(text)
        if reason:
            findings.append(SecretFinding(path, reason, (text,)))
    return findings


def _hint_for(name: str) -> str:
    """The fix for a flag or variable by its name: the Hugging Face token and the API key
    have their own secret fields; anything else gets the general advice."""
    words = re.split(r"[-_]+", name.strip("-").lower())
    if "hf" in words or "hugging" in words or "hub" in words:
        return _HINT_HF_TOKEN
    if words[-2:] == ["api", "key"] or words[-1] == "apikey":
        return _HINT_API_KEY
    return HINT


def _carries_key(flag: str) -> bool:
    words = flag.lstrip("-").lower().replace("_", "-").split("-")
    return words[-1] in _KEY_FLAG_WORDS or "password" in words or "apikey" in words


def _describe(value: str, entropy: bool) -> str | None:
    for why, pattern in _PREFIXES:
        if pattern.search(value):
            return why
    if _URL_USERINFO.search(value):
        return "credentials inside a URL (user:password@)"
    if _URL_SECRET_QUERY.search(value):
        return "a credential in a URL query"
    if entropy and _random_spans(value):
        return "a long random-looking string"
    return None


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
