"""Fleets for stacks the tests only plan or render: nothing ever connects to them."""

from __future__ import annotations


def placeholder_hosts(count: int) -> list[dict[str, str]]:
    """``count`` SSH hosts named n0, n1, ... at documentation addresses (192.0.2.0/24,
    RFC 5737) with placeholder host keys: enough for the planner, never reachable."""
    return [
        {
            "name": f"n{i}",
            "address": f"192.0.2.{10 + i}",
            "user": "root",
            "key_path": "/root/.ssh/id_ed25519",
            "host_key": f"SHA256:REPLACE0with0your0host0key0fingerprint0000{i}",
        }
        for i in range(count)
    ]
