"""Shell words: how amdfleet quotes argv for rendered scripts and printed command lines.

One rule everywhere: every word is quoted with :func:`shlex.quote`, except a bare
``${NAME}`` reference, which stays expandable (double-quoted) so a launch script can
pass a secret from ``secrets.env`` without the secret ever being rendered.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

_ENV_REF = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*\}$")


def shell_quote(value: object) -> str:
    """Quote one shell word; a bare ``${NAME}`` reference stays expandable."""
    text = str(value)
    if _ENV_REF.match(text):
        return f'"{text}"'
    return shlex.quote(text)


def shell_join(words: Iterable[object]) -> str:
    """Quote and join shell words."""
    return " ".join(shell_quote(w) for w in words)


def shell_lines(words: Iterable[object], indent: str = "    ") -> str:
    """Quote shell words, one ``--flag [value]`` per continuation line."""
    lines: list[list[str]] = [[]]
    for word in words:
        text = str(word)
        if text.startswith("-") and lines[-1]:
            lines.append([])
        lines[-1].append(shell_quote(text))
    return f" \\\n{indent}".join(" ".join(line) for line in lines)
