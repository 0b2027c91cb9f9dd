"""Value helpers the fact parsers share: tolerant conversions of what tools print (missing
markers, hex ids, sizes with units, versions, PCI addresses) and JSON read past banners."""

from __future__ import annotations

import json
import re
from typing import Any

JsonDict = dict[str, Any]

_MISSING = frozenset({"", "n/a", "na", "none", "null", "unknown", "not supported"})
_UNITS = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
}


def as_text(value: object) -> str:
    """The value as stripped text; empty for None, a dict or list, or a missing marker
    (``N/A``, ``none``, ``unknown``, ...)."""
    if value is None or isinstance(value, dict | list):
        return ""
    text = str(value).strip()
    return "" if text.lower() in _MISSING else text


def as_flags(value: object) -> tuple[str, ...] | None:
    """A tuple of flag names from a list (Pulumi hands back lists), else None."""
    if not isinstance(value, list | tuple):
        return None
    return tuple(str(flag) for flag in value)


def as_int(value: object) -> int | None:
    """An int from an int, an integral float, or a decimal or ``0x`` hex string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = as_text(value)
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        return None


def leading_int(value: object) -> int | None:
    """The integer the text starts with (``304 (0x130)`` → 304), or None."""
    match = re.match(r"\s*(\d+)", as_text(value))
    return int(match.group(1)) if match else None


def version_in(value: object) -> str | None:
    """The first dotted version number in the value (``6.4.0-47`` → ``6.4.0``), or None."""
    match = re.search(r"\d+(?:\.\d+)+", as_text(value))
    return match.group(0) if match else None


def clean_version(value: object) -> str | None:
    """A version only if the value is one (not a kernel banner that contains numbers)."""
    text = as_text(value)
    return text if re.fullmatch(r"\d+(?:\.\d+)+(?:[-+][\w.]+)*", text) else None


def gfx_arch(value: object) -> str | None:
    """``gfx942`` from ``gfx942``, ``GFX942`` or ``gfx942:sramecc+:xnack-``."""
    target = as_text(value).lower().split(":")[0]
    return target if re.fullmatch(r"gfx[0-9a-f]+", target) else None


def pci_bdf(value: object) -> str | None:
    """A PCI address as ``dddd:bb:dd.f`` (lowercase, domain added if absent)."""
    text = as_text(value).lower()
    if not re.fullmatch(r"([0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", text):
        return None
    return text if text.count(":") == 2 else f"0000:{text}"


def bdf_from_id(value: object) -> str | None:
    """Decode rocminfo's ``BDFID`` (bus << 8 | device << 3 | function)."""
    bdfid = as_int(value)
    if bdfid is None or not 0 < bdfid <= 0xFFFF:
        return None
    return f"0000:{bdfid >> 8:02x}:{(bdfid >> 3) & 0x1F:02x}.{bdfid & 0x7}"


def size_bytes(value: object) -> int | None:
    """Bytes from amd-smi sizes: ``{"value": n, "unit": "MB"}``, ``"n MB"`` or bare MB."""
    if isinstance(value, dict):
        return _scaled(value.get("value"), as_text(value.get("unit")) or "MB")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _scaled(value, "MB")
    number, _, unit = as_text(value).partition(" ")
    return _scaled(number, unit.strip() or "MB")


def _scaled(number: object, unit: str) -> int | None:
    amount = as_int(number)
    factor = _UNITS.get(unit.lower())
    return amount * factor if amount is not None and factor is not None else None


def first_hex_id(line: str) -> int | None:
    """The first four-digit ``0x`` id in a line, or None."""
    match = re.search(r"\b0x[0-9a-fA-F]{4}\b", line)
    return int(match.group(0), 16) if match else None


def key_value(part: str) -> tuple[str, str]:
    """``Key: value`` split into a lowercase key and the stripped value."""
    key, _, value = part.partition(":")
    return key.strip().lower(), value.strip()


def json_list(text: str) -> list[JsonDict]:
    """The JSON objects of a JSON list (see :func:`load_json`); empty if it is none."""
    data = load_json(text)
    if not isinstance(data, list):
        return []
    return [entry for entry in data if isinstance(entry, dict)]


def load_json(text: str) -> Any:
    """Parse JSON, skipping any banner lines a tool printed before it; None if invalid."""
    for start in (m.start() for m in re.finditer(r"^[\[{]", text, re.M)):
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except ValueError:
            continue
    return None
