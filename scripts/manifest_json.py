"""How the engine manifests are written (shared by scripts/manifest-*.py)."""

from __future__ import annotations

import json
from typing import Any


def render(manifest: dict[str, Any]) -> str:
    """JSON with one flag per line, so a version bump reads as a line diff."""
    flags = manifest["flags"]
    body = json.dumps({**manifest, "flags": ["@FLAGS@"]}, indent=2, ensure_ascii=False)
    lines = ",\n".join("    " + json.dumps(f, ensure_ascii=False) for f in flags)
    return body.replace('    "@FLAGS@"', lines) + "\n"
