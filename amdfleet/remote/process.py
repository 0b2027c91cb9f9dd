"""Shell text that starts, checks and stops long-running background processes.

Pure builders: nothing here runs anything. The text is meant for
``Connection.run(...)`` over SSH or locally.

Why the shape matters: over SSH, ``cmd && nohup server &`` keeps the channel's stdout open,
so the ``run`` call hangs until its timeout. :func:`detached` redirects every standard
stream of the background process and puts it in its own session (``setsid``), so the call
returns at once and the whole process tree can later be stopped as one process group.
"""

from __future__ import annotations

import posixpath
import shlex

DEFAULT_GRACE = 10.0
_POLL = 0.1


def detached(command: str, log_path: str, pid_path: str) -> str:
    """Shell text that starts ``command`` in the background and returns immediately.

    The process runs ``sh -c command`` as the leader of a new session and process group,
    with stdin from /dev/null and stdout+stderr appended to ``log_path``; its PID (which
    is also its process-group id) is written to ``pid_path`` before the text returns.
    Parent directories of both paths are created 0700 and a new log 0600 (a log can
    carry what the command prints about its secrets).

    Precondition: the shell running this text has no job control (true for ``ssh host
    cmd`` and ``sh -c``), so ``$!`` is the PID that ``setsid`` turns into the group leader
    (a moment after this returns; :func:`is_running` and :func:`stop_process_group` handle
    that moment).
    """
    dirs = " ".join(
        sorted({shlex.quote(posixpath.dirname(p) or ".") for p in (log_path, pid_path)})
    )
    log, pid = shlex.quote(log_path), shlex.quote(pid_path)
    return (
        f"{{ (umask 077 && mkdir -p {dirs} && : >>{log}) && {{ "
        f"nohup setsid sh -c {shlex.quote(command)} >>{log} 2>&1 </dev/null & "
        f"echo $! >{pid}; }}; }}"
    )


def new_private_file(path: str) -> str:
    """Shell text that replaces ``path`` by an empty file of mode 0600 (an older file,
    of whatever mode, is removed first: truncating it would keep its mode)."""
    quoted = shlex.quote(path)
    return f"(umask 077 && rm -f {quoted} && : >{quoted})"


def is_running(pid_path: str) -> str:
    """Shell text that exits 0 when the process group recorded in ``pid_path`` is alive.

    Zombies do not count as alive (a reparented process may never be reaped on a host
    whose PID 1 does not reap orphans). Exits 1 when the pid file is missing or stale.
    """
    pid_file = shlex.quote(pid_path)
    return f'{{ {_ALIVE_FN} _af_pid=$(cat {pid_file} 2>/dev/null) && _af_alive "$_af_pid"; }}'


def stop_process_group(pid_path: str, grace: float = DEFAULT_GRACE) -> str:
    """Shell text that stops the process group recorded in ``pid_path``.

    Sends SIGTERM to the whole group, polls for up to ``grace`` seconds until no member
    is alive, then sends SIGKILL to what is left, and removes the pid file. Idempotent:
    exits 0 when the pid file is missing or the group is already gone. Bounded: the
    text never runs longer than about ``grace`` seconds plus one poll.
    """
    polls = max(1, round(grace / _POLL))
    pid_file = shlex.quote(pid_path)
    return (
        f"{{ {_ALIVE_FN} "
        f'if _af_pid=$(cat {pid_file} 2>/dev/null) && _af_alive "$_af_pid"; then '
        '_af_signal TERM "$_af_pid"; _af_i=0; '
        f'while _af_alive "$_af_pid" && [ "$_af_i" -lt {polls} ]; do '
        f"sleep {_POLL}; _af_i=$((_af_i+1)); done; "
        'if _af_alive "$_af_pid"; then _af_signal KILL "$_af_pid"; fi; '
        f"fi; rm -f {pid_file}; }}"
    )


# POSIX shell functions. _af_alive: is process $1, or any process of group $1, alive and
# not a zombie? `kill -0` answers "no" cheaply; a "yes" is confirmed in /proc/<pid>/stat
# (zombies still answer kill -0), cutting after the last ")" because the command name may
# hold spaces. The PID itself counts because `setsid` makes it a group leader only a moment
# after `detached` returns. _af_signal: signal the group, or the PID in that moment.
_ALIVE_FN = (
    "_af_alive() { "
    'case "$1" in ""|*[!0-9]*) return 1;; esac; '
    'kill -0 "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null || return 1; '
    "for _af_s in /proc/[0-9]*/stat; do "
    '{ read -r _af_l <"$_af_s"; } 2>/dev/null || continue; '
    '_af_p=${_af_l%% *}; _af_r=${_af_l##*) }; set -- "$1" $_af_r; '
    '{ [ "$4" = "$1" ] || [ "$_af_p" = "$1" ]; } && [ "$2" != Z ] && [ "$2" != X ] && return 0; '
    "done; return 1; }; "
    '_af_signal() { kill "-$1" "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null; }; '
)
