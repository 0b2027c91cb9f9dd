"""The corpus of bad stacks: each is rejected before anything is provisioned, with an
issue that names the field and says how to fix it.

Each file in ``bad_stacks/`` states in its header what is wrong with it, the field path
the error must name (``expect-path``) and text the error must contain
(``expect-text``, in the message or the hint). Loading and planning are the only steps
that run before the Pulumi program registers its first resource, so a stack rejected
here never reaches a host (with the parity reference's check: :func:`checked_plan`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from amdfleet.config import load_stack_file
from amdfleet.errors import ConfigError
from amdfleet.verify.reference import checked_plan

CORPUS = Path(__file__).parent / "bad_stacks"
FILES = sorted(CORPUS.glob("Pulumi.bad-*.yaml"))


def _expectations(path: Path) -> tuple[str, str]:
    header = path.read_text()
    field = re.search(r"^# expect-path: (.+)$", header, re.MULTILINE)
    text = re.search(r"^# expect-text: (.+)$", header, re.MULTILINE)
    assert field and text, f"{path.name} lacks expect-path/expect-text lines"
    return field.group(1).strip(), text.group(1).strip()


def _number(path: Path) -> int:
    match = re.match(r"\d+", path.name.removeprefix("Pulumi.bad-"))
    assert match, f"{path.name} has no case number"
    return int(match.group(0))


def test_the_corpus_is_large_enough_and_numbered_without_gaps() -> None:
    numbers = sorted(_number(p) for p in FILES)
    assert numbers == list(range(1, len(numbers) + 1))  # a deleted case would leave a gap
    assert len(FILES) >= 100


@pytest.mark.parametrize("path", FILES, ids=[p.name.removeprefix("Pulumi.bad-") for p in FILES])
def test_bad_stack_is_rejected_naming_field_and_fix(path: Path) -> None:
    field, text = _expectations(path)
    with pytest.raises(ConfigError) as caught:
        checked_plan(load_stack_file(str(path)).spec)  # what runs before any resource
    error = caught.value
    assert field in error.paths, f"expected an issue at {field!r}, got {error.paths}"
    issue = next(i for i in error.issues if i.subject == field)
    assert text in f"{issue.detail} {issue.hint}", str(error)
    assert issue.hint, f"issue at {field} has no fix: {issue}"
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    assert stack in str(error), "the error names the stack"


@pytest.mark.parametrize("path", FILES, ids=[p.name.removeprefix("Pulumi.bad-") for p in FILES])
def test_every_issue_in_the_corpus_carries_a_hint(path: Path) -> None:
    """Not only the expected issue: every issue a bad stack raises says how to fix it."""
    with pytest.raises(ConfigError) as caught:
        checked_plan(load_stack_file(str(path)).spec)
    assert caught.value.issues, str(caught.value)
    for issue in caught.value.issues:
        assert issue.subject and issue.detail and issue.hint, f"{path.name}: {issue}"
        assert f"{issue.subject}: " in str(caught.value) and issue.hint in str(caught.value)


HIDING = [p for p in FILES if "# expect-hidden: " in p.read_text()]


@pytest.mark.parametrize("path", HIDING, ids=[p.name.removeprefix("Pulumi.bad-") for p in HIDING])
def test_a_secret_in_a_bad_stack_is_never_echoed(path: Path) -> None:
    """A stack holding a (fake) secret in a plain field is rejected without the secret in
    the error: not in a message, a hint, or a path."""
    hidden = re.search(r"^# expect-hidden: (.+)$", path.read_text(), re.MULTILINE)
    assert hidden
    with pytest.raises(ConfigError) as caught:
        checked_plan(load_stack_file(str(path)).spec)
    assert hidden.group(1).strip() not in str(caught.value)
    assert "pulumi config set --secret" in str(caught.value)
