"""Placeholder replaced by the schema generator."""

from __future__ import annotations

from typing import Any


def package_schema(version: str) -> dict[str, Any]:
    return {"name": "amdfleet", "version": version}
