"""Host-key pins: parse, fingerprint, compare, check, generate, and refuse placeholders.

A stack pins each SSH host's key (``host_key``) as a public key line
(``ssh-ed25519 AAAA...``) or an OpenSSH fingerprint (``SHA256:...``); nothing is trusted
on first use. This module is the one home of that concept: the stack schema checks a
pin's form with :func:`check_host_key`, ``remote.transport.ssh`` compares the key a host presents
with :func:`parse_host_key` and :func:`fingerprint_of`, a cloud instance gets its host
key from :func:`generate_host_key` (injected through user-data), and the planner's
warning and ``pulumi up``'s refusal of the example stacks' placeholder pins come from
:func:`placeholder_host_keys` and :func:`refuse_placeholder_host_keys`.

It sits at the bottom layer: it imports only :mod:`amdfleet.errors` and third-party
libraries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from amdfleet.errors import ConfigError
from amdfleet.findings import Finding, config_issue

KEY_COMMENT = "amdfleet"
"""The comment of the public key line of a host key amdfleet generates."""


# --- parse, fingerprint, compare -------------------------------------------------------


@dataclass(frozen=True)
class PinnedKey:
    """A parsed host-key pin: the key type when known, and its SHA256 fingerprint."""

    fingerprint: str
    key_type: str | None = None


def parse_host_key(text: str) -> PinnedKey:
    """Parse a pin: ``<type> <base64> [comment]`` or ``SHA256:<base64>``.

    Raises ValueError with a description of the accepted forms when ``text`` is neither.
    """
    text = text.strip()
    if text.startswith("SHA256:") and len(text) > len("SHA256:"):
        return PinnedKey(fingerprint=text)
    fields = text.split()
    if len(fields) >= 2:
        blob = decode_key_blob(fields[1])
        if blob is not None and blob_type(blob) == fields[0]:
            return PinnedKey(fingerprint=fingerprint_of(blob), key_type=fields[0])
    raise ValueError(
        f"not a host key pin: {text[:60]!r}; expected a public key line "
        "('ssh-ed25519 AAAA...') or an OpenSSH fingerprint ('SHA256:...')"
    )


def fingerprint_of(key_blob: bytes) -> str:
    """The OpenSSH SHA256 fingerprint of a public key blob (as ``ssh-keygen -l`` prints)."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


# SSH public-key blobs: the base64 body of a ``<type> AAAA...`` line, and the
# length-prefixed strings of its wire format (the key type first, then for ECDSA the curve).


def decode_key_blob(text: str) -> bytes | None:
    """The blob a key line's base64 part encodes, or None when it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def blob_strings(blob: bytes, count: int) -> list[bytes]:
    """The first ``count`` length-prefixed strings of an SSH wire-format key blob (fewer
    when the blob ends or a length runs past it)."""
    out: list[bytes] = []
    offset = 0
    while len(out) < count and offset + 4 <= len(blob):
        size = int.from_bytes(blob[offset : offset + 4], "big")
        offset += 4
        if size > len(blob) - offset:
            break
        out.append(blob[offset : offset + size])
        offset += size
    return out


def blob_type(blob: bytes) -> str | None:
    """The key type a blob declares (``ssh-ed25519``), or None when it declares none."""
    first = blob_strings(blob, 1)
    return first[0].decode("ascii", errors="replace") if first else None


# --- generate (a cloud instance's key, injected through user-data) -----------------------


@dataclass(frozen=True)
class HostKeyPair:
    """An instance's SSH host key: the private key in OpenSSH format (a secret, not in
    the repr) and its public key line (``ssh-ed25519 AAAA... amdfleet``)."""

    private_openssh: str = field(repr=False)
    public_line: str


def generate_host_key() -> HostKeyPair:
    """A fresh ed25519 host key pair."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return HostKeyPair(private_openssh=private, public_line=f"{public.decode()} {KEY_COMMENT}")


# --- check a stack's pin, and its placeholders -------------------------------------------


HOST_KEY_TYPES: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
"""Host key types OpenSSH offers, as a public key line names them."""

PLACEHOLDER_HOST_KEY = "REPLACE0with0your0host0key0fingerprint"
"""The stem of the example stacks' host_key placeholder (`SHA256:REPLACE0with0...`)."""

_KEYSCAN_HINT = "get it with `ssh-keyscan -t ed25519 HOST | ssh-keygen -lf -`"


def is_placeholder_host_key(value: str) -> bool:
    """Whether ``value`` is the example stacks' placeholder rather than a real pin."""
    return value.removeprefix("SHA256:").startswith(PLACEHOLDER_HOST_KEY)


class PinnedHost(Protocol):
    """A fleet host's name, address and pin: a stack's host entry, or the planned target."""

    @property
    def name(self) -> str:
        """The host's label."""

    @property
    def address(self) -> str | None:
        """Where it is reached."""

    @property
    def host_key(self) -> str | None:
        """Its pinned host key."""


def placeholder_host_keys(hosts: Sequence[PinnedHost]) -> list[Finding]:
    """One issue per fleet host (in fleet order) still pinned to the placeholder host key.

    A placeholder plans (``amdfleet plan`` and ``pulumi preview`` connect to nothing) but
    must be replaced before anything connects to the host.
    """
    return [
        _placeholder_host_key_issue(i, host.name, host.address or "HOST", host.host_key)
        for i, host in enumerate(hosts)
        if host.host_key and is_placeholder_host_key(host.host_key)
    ]


def placeholder_build_host_key(host: PinnedHost | None) -> list[Finding]:
    """The issue of a separate build host (``image_build.build_host``) still pinned to the
    placeholder host key, if it is."""
    if host is None or not host.host_key or not is_placeholder_host_key(host.host_key):
        return []
    issue = _placeholder_host_key_issue(0, host.name, host.address or "HOST", host.host_key)
    return [config_issue("image_build.build_host.host_key", issue.detail, issue.hint)]


def refuse_placeholder_host_keys(
    hosts: Sequence[PinnedHost], build_host: PinnedHost | None, source: str
) -> None:
    """Raise ConfigError naming every host (and the separate build host, if given) still
    pinned to the placeholder host key: nothing may connect to it."""
    issues = placeholder_host_keys(hosts) + placeholder_build_host_key(build_host)
    if issues:
        raise ConfigError(issues, source)


def _placeholder_host_key_issue(index: int, name: str, address: str, host_key: str) -> Finding:
    """The issue for fleet host ``index`` pinned to the placeholder ``host_key``."""
    return config_issue(
        f"fleet.hosts[{index}].host_key",
        f"host '{name}' is pinned to the example placeholder {host_key!r}, not its real host key",
        f"{_KEYSCAN_HINT.replace('HOST', address)} and paste the SHA256:... fingerprint it "
        "prints (or the key line `ssh-keyscan` prints)",
    )


def check_host_key(value: str) -> None:
    """Raise ValueError (what is wrong — how to fix it) unless ``value`` is a host-key pin
    a stack may hold: a public key line of a type OpenSSH offers whose body declares that
    type (and curve), an OpenSSH SHA256 fingerprint, or the example placeholder."""
    if is_placeholder_host_key(value):
        return  # planned with a warning, refused before connecting (placeholder_host_keys)
    if value.startswith("SHA256:"):
        _check_fingerprint(value)
        return
    parts = value.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        what = "is neither a public key line nor a fingerprint"
        if len(parts) >= 2 and re.fullmatch(r"[a-z0-9@.-]+", parts[0]):
            what = f"has key type {parts[0]!r}, which OpenSSH does not offer as a host key"
        raise ValueError(
            f"host_key {value[:40]!r} {what} — use "
            f"'<type> AAAA...' with a type OpenSSH offers ({', '.join(HOST_KEY_TYPES)}) or "
            f"'SHA256:<43 base64 chars>'; {_KEYSCAN_HINT}"
        )
    _check_key_body(parts[0], parts[1])


def _check_fingerprint(value: str) -> None:
    body = value.removeprefix("SHA256:")
    # 43 base64 chars carry 258 bits; a SHA-256 digest leaves the last 2 bits zero.
    if re.fullmatch(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]", body):
        return
    if re.fullmatch(r"[A-Za-z0-9+/]{43}", body):
        wrong = f"its last character {body[-1]!r} cannot end a SHA-256 digest"
    else:
        wrong = f"it has {len(body)} characters after 'SHA256:' where a real one has 43 base64"
    raise ValueError(
        f"host_key {value[:50]!r} is not an OpenSSH SHA256 fingerprint ({wrong}) — "
        f"{_KEYSCAN_HINT} and copy its SHA256:... field whole"
    )


def _check_key_body(key_type: str, body: str) -> None:
    declared = blob_strings(decode_key_blob(body) or b"", 2)
    if not declared or declared[0] != key_type.encode():
        found = "its base64 part does not decode to an SSH public key"
        if declared:
            found = f"it holds a {declared[0].decode(errors='replace')!r} key"
        raise ValueError(
            f"host_key is declared {key_type} but {found} — paste the whole line ssh-keyscan "
            f"prints for the host, unchanged; {_KEYSCAN_HINT}"
        )
    curve = key_type.removeprefix("sk-").removeprefix("ecdsa-sha2-").split("@")[0]
    if key_type.startswith(("ecdsa-", "sk-ecdsa-")) and declared[1:] != [curve.encode()]:
        raise ValueError(
            f"host_key is declared {key_type} but its key body is not on curve {curve} — "
            f"paste the whole line ssh-keyscan prints for the host, unchanged; {_KEYSCAN_HINT}"
        )
