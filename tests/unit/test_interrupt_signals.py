"""SIGINT ignored at start (a background job of a script) is not passed on to the Pulumi
commands amdfleet starts: the Pulumi CLI closes each plugin with SIGINT and waits 5 s for
one that ignores it (amdfleet/interrupts.py).

Real: a Python process started with SIGINT and SIGQUIT ignored, as ``cmd &`` in a
non-interactive shell starts it (``env --ignore-signal``), and the child it starts, whose
kernel-reported ignored-signal mask (``SigIgn`` in /proc/PID/status) is read.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The child reports the signals it ignores, as the kernel has them.
CHILD = "grep '^SigIgn:' /proc/self/status"
PARENT = (
    "import subprocess, sys\n"
    "if sys.argv[1] == 'deliver':\n"
    "    from amdfleet.interrupts import deliver_interrupts\n"
    "    deliver_interrupts()\n"
    f"print(subprocess.run(['sh', '-c', {CHILD!r}], capture_output=True, text=True).stdout)\n"
)


def _ignored_by_child(mode: str, *, ignore: str | None = "INT,QUIT") -> set[int]:
    prefix = ["env", f"--ignore-signal={ignore}"] if ignore else []
    out = subprocess.run(
        [*prefix, sys.executable, "-c", PARENT, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mask = int(out.split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_a_background_start_is_passed_on_without_the_fix() -> None:
    """The premise: without amdfleet's reset, the child ignores SIGINT and SIGQUIT."""
    assert {signal.SIGINT, signal.SIGQUIT} <= _ignored_by_child("plain")


def test_deliver_interrupts_gives_children_default_interrupts() -> None:
    ignored = _ignored_by_child("deliver")
    assert signal.SIGINT not in ignored and signal.SIGQUIT not in ignored


def test_deliver_interrupts_changes_nothing_for_a_foreground_start() -> None:
    assert _ignored_by_child("deliver", ignore=None) == _ignored_by_child("plain", ignore=None)


def test_every_amdfleet_command_delivers_interrupts() -> None:
    """The CLI group resets them before any command runs (``amdfleet stacks`` here; the
    commands that start Pulumi, campaign, reap, status and cloud orphans, run under the
    same group)."""
    code = (
        "import signal\n"
        "from amdfleet.cli import main\n"
        "main(['stacks'], standalone_mode=False)\n"
        "print('INT', signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
        "print('QUIT', signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL)\n"
    )
    out = subprocess.run(
        ["env", "--ignore-signal=INT,QUIT", sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[-2:] == ["INT True", "QUIT True"], out
