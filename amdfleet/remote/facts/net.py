"""Network facts: interfaces and their addresses, the default route, RDMA links."""

from __future__ import annotations

from amdfleet.remote.facts.records import NetInterface, RdmaLink
from amdfleet.remote.facts.registry import Fact, register
from amdfleet.remote.facts.values import JsonDict, as_int, as_text, json_list


def parse_ip_addr(text: str) -> tuple[NetInterface, ...]:
    """Interfaces from ``ip -j addr``."""
    entries = json_list(text)
    return tuple(_interface(e) for e in entries if as_text(e.get("ifname")))


def parse_default_route(text: str) -> str | None:
    """The interface of the default route from ``ip -j route show default``."""
    return next((as_text(r.get("dev")) for r in json_list(text) if as_text(r.get("dev"))), None)


def parse_rdma_link(text: str) -> tuple[RdmaLink, ...]:
    """RDMA ports from ``rdma -j link`` (``[]`` or nothing when there are none)."""
    return tuple(_rdma_link(e) for e in json_list(text) if as_text(e.get("ifname")))


def _interface(entry: JsonDict) -> NetInterface:
    infos = [a for a in entry.get("addr_info") or () if isinstance(a, dict)]
    addresses = tuple(_address(a) for a in infos if as_text(a.get("local")))
    state = str(entry.get("operstate") or "")  # "UNKNOWN" is a real state (loopback)
    return NetInterface(as_text(entry.get("ifname")), state, addresses)


def _address(info: JsonDict) -> str:
    prefix = as_int(info.get("prefixlen"))
    local = as_text(info.get("local"))
    return local if prefix is None else f"{local}/{prefix}"


def _rdma_link(entry: JsonDict) -> RdmaLink:
    return RdmaLink(
        name=as_text(entry.get("ifname")),
        port=as_int(entry.get("port")),
        state=as_text(entry.get("state")),
        netdev=as_text(entry.get("netdev")),
    )


# ------------------------------------------------------------------------- facts

IP_ADDR = register(Fact("ip_addr", "ip -j addr", parse_ip_addr))
DEFAULT_ROUTE = register(Fact("default_route", "ip -j route show default", parse_default_route))
RDMA_LINK = register(Fact("rdma_link", "rdma -j link", parse_rdma_link))
