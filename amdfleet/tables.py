"""Terminal tables: one list of rows in, aligned text out, laid out by ``tabulate``.

Every table amdfleet prints goes through :func:`table`, so alignment is computed in one
place from the rows themselves (no hand-padded f-strings that break when a value grows).
Cells are printed as given: callers format numbers to the precision they mean, and a
string such as ``"0.50"`` stays ``"0.50"``. The one exception is the block that mirrors
``vllm bench serve``'s result (:func:`amdfleet.verify.report.render_benchmark_table`),
kept byte-for-byte as vLLM prints it so the two can be diffed.

Styles:

- ``"columns"``: a header, a rule of dashes under each column, two spaces between
  columns; without headers, just the aligned rows.
- ``"markdown"``: a pipe table (``| a | b |`` with ``---:`` under right-aligned
  columns), as ``lm_eval`` prints its results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from tabulate import tabulate

Align = Literal["left", "right", "center"]
Style = Literal["columns", "markdown"]


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    align: Sequence[Align] | None = None,
    style: Style = "columns",
    indent: str = "",
) -> str:
    """``rows`` laid out under ``headers`` (empty: no header), one line per row.

    ``align`` gives each column's alignment (default: all left); ``indent`` prefixes
    every line. Trailing spaces are trimmed. ``None`` cells print as empty.
    """
    body = [list(row) for row in rows]
    width = len(headers) or max((len(row) for row in body), default=0)
    aligns: list[str] = list(align) if align is not None else ["left"] * width
    fmt = "pipe" if style == "markdown" else "simple" if headers else "plain"
    text = tabulate(
        body,
        headers=list(headers),
        tablefmt=fmt,
        colalign=aligns,
        disable_numparse=True,
        missingval="",
    )
    return "\n".join(f"{indent}{line}".rstrip() for line in text.splitlines())
