"""An engine amdfleet did not start: find it by its port, compare its command line with a
stack's, and check and stop it by pid.

A team's hand-started server (``vllm serve ... --port 8000``) has no amdfleet directory,
supervisor or pid file: what identifies it on its host is the process listening on its
port. :func:`engine_facts_command` finds that process and prints its pid, start time and
command line, and a SHA-256 of each API-key variable in its environment (the key itself
never leaves the host); :func:`parse_engine_facts` reads that back. The start time guards
every later command: a pid the kernel gave to another process since is not that engine.

Pure builders and parsers; nothing here runs anything.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass, field
from datetime import datetime

_MARK = "AMDFLEET_ADOPT"
STOP_GRACE_S = 30
_POLL_S = 0.2
_VALUE_FLAGS_PREFIX = "--"


@dataclass(frozen=True)
class EngineFacts:
    """The process serving on a port: its pid, start time (``ps -o lstart``), command line,
    and the SHA-256 of each API-key variable its environment sets (by name)."""

    pid: int
    started: str
    argv: tuple[str, ...]
    key_hashes: dict[str, str] = field(default_factory=dict)


def engine_facts_command(port: int, key_vars: tuple[str, ...]) -> str:
    """Shell text that prints the facts of the process listening on TCP ``port`` (nothing
    but ``AMDFLEET_ADOPT none`` when none listens, ``AMDFLEET_ADOPT missing <command>``
    when the host lacks ``ss``, ``ps`` or ``pkill``): the listener's pid from ``ss -ltnp``,
    its ``ps -o lstart=``, its ``/proc/<pid>/cmdline`` (base64, NULs kept) and a SHA-256 of
    the value of each of ``key_vars`` in its environment (the value stays on the host)."""
    hashes = "".join(
        f"_af_v=$(tr '\\0' '\\n' </proc/$_af_pid/environ 2>/dev/null | "
        f"sed -n {shlex.quote(f's/^{name}=//p')} | head -n 1); "
        f'[ -n "$_af_v" ] && echo "{_MARK} key {name} '
        f"$(printf '%s' \"$_af_v\" | sha256sum | cut -d' ' -f1)\"; "
        for name in key_vars
    )
    return (
        f'for _af_t in ss ps pkill; do command -v "$_af_t" >/dev/null 2>&1 || '
        f'{{ echo "{_MARK} missing $_af_t"; exit 0; }}; done; '
        f"_af_pid=$(ss -Hltnp 'sport = :{int(port)}' 2>/dev/null | "
        "sed -n 's/.*pid=\\([0-9][0-9]*\\).*/\\1/p' | head -n 1); "
        f'if [ -z "$_af_pid" ]; then echo "{_MARK} none"; exit 0; fi; '
        f'echo "{_MARK} pid $_af_pid"; '
        f'echo "{_MARK} started $(ps -o lstart= -p "$_af_pid")"; '
        f'echo "{_MARK} argv $(base64 -w0 </proc/$_af_pid/cmdline)"; '
        f"{hashes}true"
    )


class MissingTool(ValueError):
    """The host lacks a command adoption needs (``ss``: iproute2; ``ps``, ``pkill``:
    procps)."""


def parse_engine_facts(output: str) -> EngineFacts | None:
    """Read :func:`engine_facts_command`'s output (None: nothing listens on the port).

    Raises MissingTool naming the command the host lacks.
    """
    values: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.strip().split(" ", 2)
        if len(parts) < 2 or parts[0] != _MARK:
            continue
        if parts[1] == "none":
            return None
        if parts[1] == "missing":
            raise MissingTool(parts[2] if len(parts) == 3 else "?")
        if parts[1] == "key" and len(parts) == 3:
            name, _, digest = parts[2].partition(" ")
            hashes[name] = digest.strip()
        elif len(parts) == 3:
            values[parts[1]] = parts[2].strip()
    if "pid" not in values:
        return None
    raw = base64.b64decode(values.get("argv", ""))
    argv = tuple(arg.decode(errors="replace") for arg in raw.split(b"\0") if arg)
    return EngineFacts(int(values["pid"]), values.get("started", ""), argv, hashes)


def key_hash(value: str) -> str:
    """The SHA-256 :func:`engine_facts_command` prints for an API key ``value``."""
    return hashlib.sha256(value.encode()).hexdigest()


def iso_time(lstart: str) -> str:
    """``ps -o lstart`` (``Tue Dec  8 01:40:00 2026``, the host's local time) as ISO 8601;
    the text itself when it does not parse."""
    try:
        return datetime.strptime(" ".join(lstart.split()), "%a %b %d %H:%M:%S %Y").isoformat()
    except ValueError:
        return lstart


def same_process(pid: int, started: str) -> str:
    """Shell text that exits 0 while ``pid`` is the process that started at ``started``
    (not a zombie, not a later process given the same pid)."""
    return (
        f'{{ [ "$(ps -o lstart= -p {int(pid)} 2>/dev/null)" = {shlex.quote(started)} ] && '
        f"! grep -q '^State:.*Z' /proc/{int(pid)}/status 2>/dev/null; }}"
    )


def stop_command(pid: int, started: str, grace: int = STOP_GRACE_S) -> str:
    """Shell text that stops the adopted engine: SIGTERM (vLLM then stops its engine-core
    processes), up to ``grace`` seconds, then SIGKILL to it and its children. Nothing is
    signalled when ``pid`` is no longer that process. Idempotent."""
    alive = same_process(pid, started)
    polls = int(grace / _POLL_S)
    return (
        f"if {alive}; then kill -TERM {int(pid)}; _af_i=0; "
        f"while {alive} && [ $_af_i -lt {polls} ]; do sleep {_POLL_S}; _af_i=$((_af_i+1)); done; "
        f"if {alive}; then pkill -KILL -P {int(pid)}; kill -KILL {int(pid)}; fi; fi; true"
    )


def masked_argv(argv: tuple[str, ...], secret_flags: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` with the value of each of ``secret_flags`` (``--api-key K`` or
    ``--api-key=K``) replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in secret_flags:
            out.append(f"{flag}=***" if eq else arg)
            hide_next = not eq
            continue
        out.append(arg)
    return tuple(out)


def serve_arguments(argv: tuple[str, ...], executable: str) -> tuple[str, ...] | None:
    """The arguments after ``executable`` in a running process's ``argv`` (a console script
    runs as ``python <script> ...``, so it may come second); None when it is not there."""
    name = executable.rsplit("/", 1)[-1]
    for i, arg in enumerate(argv[:3]):
        if arg == executable or (name and arg.rsplit("/", 1)[-1] == name):
            return argv[i + 1 :]
    return None


def command_differences(running: tuple[str, ...], wanted: tuple[str, ...]) -> list[str]:
    """What differs between two engine argument lists (after the executable), flag by
    flag in the stack's terms, ``--flag value`` and ``--flag=value`` alike and the order
    of flags aside: ``--max-model-len: running 4096, stack 2048``. Empty when the same."""
    run_pos, run_flags = _split(running)
    want_pos, want_flags = _split(wanted)
    out: list[str] = []
    if run_pos != want_pos:
        out.append(f"arguments: running {' '.join(run_pos)!r}, stack {' '.join(want_pos)!r}")
    for flag in sorted(set(run_flags) | set(want_flags)):
        have, want = run_flags.get(flag), want_flags.get(flag)
        if have == want:
            continue
        out.append(f"{flag}: running {_show(have)}, stack {_show(want)}")
    return out


def _split(args: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Positional arguments before the first flag, and each flag's values (a flag given
    twice keeps both, in order)."""
    positional: list[str] = []
    flags: dict[str, tuple[str, ...]] = {}
    current: str | None = None
    for arg in args:
        if arg.startswith(_VALUE_FLAGS_PREFIX) and len(arg) > 2:
            name, eq, value = arg.partition("=")
            flags[name] = (*flags.get(name, ()), *((value,) if eq else ()))
            current = None if eq else name
        elif current is not None:
            flags[current] = (*flags[current], arg)
        else:
            positional.append(arg)
    return tuple(positional), flags


def _show(values: tuple[str, ...] | None) -> str:
    if values is None:
        return "not set"
    return " ".join(values) if values else "set"
