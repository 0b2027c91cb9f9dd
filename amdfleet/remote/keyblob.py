"""SSH public-key blobs: the base64 body of a ``<type> AAAA...`` line, and the
length-prefixed strings of its wire format (the key type first, then for ECDSA the
curve). Pure and light: the stack schema checks pins with it, ``ssh`` pins keys with it.
"""

from __future__ import annotations

import base64
import binascii


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
