"""Network addresses in a stack: what counts as one, and how it is written in a URL.

A stack names hosts by an IPv4 address, an IPv6 address or a DNS host name, nothing
else: no ``user@``, no ``:port``, no scheme. Wherever amdfleet builds ``host:port`` (an
endpoint URL, a rendezvous address) it goes through :func:`host_port`, which brackets
IPv6 addresses as URLs and ``host:port`` strings require (``[2001:db8::1]:8000``).
"""

from __future__ import annotations

import ipaddress
import re

_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAX_NAME = 253


def check_address(value: str) -> str:
    """Return ``value`` if it is an IPv4 address, an IPv6 address or a host name.

    Raises ValueError saying what is wrong (``user@host``, ``host:port``, a URL, an
    out-of-range octet) and how to write it instead, as ``message — fix``.
    """
    if _is_ip(value) or _is_host_name(value):
        return value
    # 'user:password@host' must not reach an error message: the user part is not shown.
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^@/]*@", r"\1***@", value)
    raise ValueError(f"{shown!r} is not an IPv4/IPv6 address or a host name — {_fix(value)}")


def canonical_address(address: str) -> str:
    """One spelling per address: 2001:DB8::1 and 2001:db8:0::1 are the same host, as are
    GPU-01.example.com and gpu-01.example.com."""
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address.lower().removesuffix(".")


def is_ipv6(address: str) -> bool:
    """Whether ``address`` is an IPv6 address (which needs brackets before a ``:port``)."""
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
    except ValueError:
        return False


def host_port(address: str, port: int) -> str:
    """``address:port``, with an IPv6 address in brackets (``[::1]:8000``)."""
    return f"[{address}]:{port}" if is_ipv6(address) else f"{address}:{port}"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_host_name(value: str) -> bool:
    name = value.removesuffix(".")
    if not name or len(name) > _MAX_NAME:
        return False
    labels = name.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return False
    # An all-digit last label is an IP address gone wrong (10.0.0.300), not a name.
    return not labels[-1].isdigit()


def _fix(value: str) -> str:
    if "://" in value or value.startswith("//"):
        return "write only the host, without a scheme or path (e.g. 'gpu-01.example.com')"
    if "@" in value:
        return "put the user in the host's 'user' field and only the address here"
    if value.startswith("[") and value.endswith("]"):
        return f"write the IPv6 address without brackets: {value[1:-1]!r}"
    if value.count(":") == 1 or (value.startswith("[") and "]:" in value):
        return "put the port in its own field ('port' for SSH, serving.port for the API)"
    if re.fullmatch(r"[0-9.]+", value):
        return "an IPv4 address is four numbers 0-255 separated by dots, e.g. 192.0.2.10"
    return (
        "use an IPv4 address (192.0.2.10), an IPv6 address (2001:db8::10) or a host name "
        "of letters, digits, dashes and dots (gpu-01.example.com)"
    )
