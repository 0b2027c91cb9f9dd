"""The package layering: no import cycles between amdfleet's packages, none upward.

Every ``import`` in every module under ``amdfleet/`` is read with :mod:`ast` (function
level and ``TYPE_CHECKING`` imports included: a type is a dependency too) and mapped to
the package it names: ``amdfleet/plan/layout.py`` is in ``plan``, a top-level module
such as ``amdfleet/render.py`` is its own package (``render``). :data:`LAYERS` declares
the order once, bottom first; a package may import packages of lower layers only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "amdfleet"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("findings",),
    ("errors",),
    (
        "addresses",
        "hostkeys",
        "interrupts",
        "pulumi_backend",
        "pulumi_project",
        "pydantic_issues",
        "secretscan",
        "shellwords",
        "tables",
        "templates",
    ),
    ("catalog",),
    ("config",),
    ("remote",),
    ("clouds", "engines"),
    ("plan",),
    ("render", "verify"),
    ("providers",),
    ("components",),
    ("cloud_fleet", "campaign", "scaffold"),
    ("program",),
    ("plugin",),
    ("cli",),
)
"""Bottom first. Packages of one layer do not import each other."""

KNOWN_UPWARD: dict[tuple[str, str], str] = {}
"""Upward imports still in the code, each with where it is; an entry goes when its
import does (test_every_known_upward_import_is_still_there says when)."""


def test_every_package_has_a_layer() -> None:
    declared = [name for layer in LAYERS for name in layer]
    assert len(declared) == len(set(declared)), "a package is declared in two layers"
    assert sorted(_packages()) == sorted(declared), "declare each package in LAYERS once"


def test_no_package_imports_a_higher_layer_or_its_own() -> None:
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    wrong = [
        f"{where}: {source} (layer {rank[source]}) imports {target} (layer {rank[target]})"
        for (source, target), where in sorted(_edges().items())
        if rank[target] >= rank[source] and (source, target) not in KNOWN_UPWARD
    ]
    assert wrong == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in _edges():
        if (source, target) not in KNOWN_UPWARD:
            graph[source].add(target)
    cycles = [cycle for start in sorted(graph) if (cycle := _cycle_from(start, graph))]
    assert cycles == []


def test_every_known_upward_import_is_still_there() -> None:
    gone = sorted(set(KNOWN_UPWARD) - set(_edges()))
    assert gone == [], f"remove {gone} from KNOWN_UPWARD: the import is gone"


def test_the_import_reader_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from amdfleet import catalog\n"
        "from . import models\n"
        "if TYPE_CHECKING:\n"
        "    from amdfleet.render import RenderedFile\n"
        "def f():\n"
        "    import amdfleet.engines.base\n"
    )
    module = tmp_path / "plan" / "layout.py"
    module.parent.mkdir()
    module.write_text(source)
    assert sorted(_imported(module, tmp_path)) == [
        "amdfleet.catalog",
        "amdfleet.engines.base",
        "amdfleet.plan.models",
        "amdfleet.render.RenderedFile",
    ]


# --- helpers -----------------------------------------------------------------------------


def _packages() -> set[str]:
    return {_package(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")} - {""}


def _package(relative: Path) -> str:
    """``plan/layout.py`` → ``plan``; ``render.py`` → ``render``; ``__init__.py`` → ''."""
    first = relative.parts[0]
    return "" if first == "__init__.py" else first.removesuffix(".py")


@cache
def _edges() -> dict[tuple[str, str], str]:
    """(importing package, imported package) → the first ``file:line`` doing it."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        source = _package(relative)
        for name, line in _imported(path, ROOT).items():
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if source and target and target != source:
                edges.setdefault((source, target), f"amdfleet/{relative}:{line}")
    return edges


def _imported(path: Path, root: Path) -> dict[str, int]:
    """Every ``amdfleet...`` name ``path`` imports (``from a import b`` as ``a.b``), with
    the line of its first import."""
    package = ["amdfleet", *path.relative_to(root).parent.parts]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "amdfleet":
                found.setdefault(name, node.lineno)
    return found


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str]:
    """A path of imports from ``start`` back to itself, or [] when there is none."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in sorted(graph.get(node, ())):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return []
