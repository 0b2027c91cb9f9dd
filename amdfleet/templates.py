"""Where the jinja2 templates live: ``amdfleet/data/templates``.

In a checkout that is a link to the top-level ``templates/`` directory; an installed
amdfleet (its wheel) carries a copy there, so it never reads the source tree.

The renderers (:mod:`amdfleet.render`) load them from here, and the planner reads the
Dockerfile's template text for the image's content tag without rendering it, so
neither of the two imports the other for it.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATES_DIR = (Path(__file__).parent / "data" / "templates").resolve()
DOCKERFILE_TEMPLATE = "Dockerfile.aiter-vllm.j2"


def dockerfile_template() -> str:
    """The Dockerfile's template text: with the build arguments it determines the rendered
    Dockerfile, so the plan hashes the two for the image's content tag without rendering
    (and without importing jinja2)."""
    return (TEMPLATES_DIR / DOCKERFILE_TEMPLATE).read_text()
